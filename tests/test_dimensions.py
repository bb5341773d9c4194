"""Compression dimensions: pruning and quantization as search variables, on real models and onnxruntime."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import yaml

from conftest import FMNIST, ROOT, requires
from hwnas import supernets
from hwnas.cli import main
from hwnas.config import load_config
from hwnas.devices.backends import create_backend
from hwnas.devices.energy import count_by_precision
from hwnas.devices.onnx import run, session, to_onnx
from hwnas.dimensions import DIMENSIONS, JointSpace, dimension
from hwnas.dimensions.pruning import kept_channels
from hwnas.dimensions.quantization import QuantizedModel, fold_pool_convs, onnx_scope
from hwnas.errors import ConfigError, HwnasError
from hwnas.modelstats import count_flops, count_params
from hwnas.supernets import calibration_batches, load_dataset, materialize, measure_accuracy

pytestmark = pytest.mark.usefixtures("one_torch_thread")
JOINT = ["architecture", "pruning", "quantization"]


@pytest.fixture(scope="module")
def data():
    return load_dataset("fmnist-mini")


@pytest.fixture(scope="module")
def default():
    return supernets.load_default()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return supernets.create("elastic_resnet").eval()


def with_values(config, **values):
    return {**config, **{k.replace("__", "."): v for k, v in values.items()}}


def all_stages(net, keep):
    return {f"prune.stage{i}": keep for i in range(net.num_stages)}


# --- the joint space ------------------------------------------------------------------------
def test_registry_and_arch_only_space_is_the_supernets(default):
    assert {"architecture", "pruning", "quantization"} <= set(DIMENSIONS.names())
    assert JointSpace(default, ["architecture"]).space is default.space  # arch-only runs unchanged


def test_joint_space_is_the_product_with_readable_names(default):
    joint = JointSpace(default, JOINT, {"pruning": {"keep": [1.0, 0.5]}})
    names = [v.name for v in joint.space.variables]
    n_arch = default.space.n_var
    assert names[:n_arch] == [v.name for v in default.space.variables]
    assert names[n_arch:n_arch + 3] == ["prune.stage0", "prune.stage1", "prune.stage2"]
    assert names[n_arch + 3:] == ["quant.stem"] + [f"quant.block{b}" for b in range(12)] + ["quant.head"]
    assert joint.space.variables[n_arch].options == (0.5, 1.0)  # sorted: smallest network first
    g = joint.space.sample(np.random.default_rng(1), 4)
    for genome in g:
        np.testing.assert_array_equal(joint.space.encode(joint.space.decode(genome)), genome)
    X = joint.features(g)
    assert X.shape[0] == 4 and np.isfinite(X).all()
    largest = joint.space.decode(joint.space.largest())
    assert joint.describe(largest) == default.describe(default.largest_config())  # uncompressed: just the arch
    config = with_values(default.smallest_config(), prune__stage1=0.5, quant__block0="int8", quant__block3="int8")
    config = {**joint.space.decode(joint.space.largest()), **config}
    assert "keep=1/0.5/1" in joint.describe(config) and "int8=b0" in joint.describe(config)
    assert "b3" not in joint.describe(config)  # smallest depth 2: slot 3 does not run


def test_uncompressed_keeps_the_architecture_and_drops_the_compression(default):
    """The smallest joint genome is the most compressed; uncompressed() of it is the smallest architecture at
    keep 1.0 and fp32, whatever order the YAML lists the choices in."""
    joint = JointSpace(default, JOINT, {"quantization": {"precisions": ["fp32", "int8"]}})
    smallest = joint.space.decode(joint.space.smallest())
    assert {smallest[k] for k in smallest if k.startswith("prune.")} == {0.5}
    plain = joint.space.decode(joint.uncompressed(joint.space.smallest()))
    assert {k: v for k, v in plain.items() if not k.startswith(("prune.", "quant."))} == default.smallest_config()
    assert {plain[k] for k in plain if k.startswith("prune.")} == {1.0}
    assert {plain[k] for k in plain if k.startswith("quant.")} == {"fp32"}
    assert joint.describe(plain) == default.describe(default.smallest_config())
    # A choice list without the neutral option leaves those genes as they were.
    only_pruned = JointSpace(default, JOINT, {"pruning": {"keep": [0.5, 0.75]}})
    g = only_pruned.space.smallest()
    np.testing.assert_array_equal(only_pruned.uncompressed(g)[:default.space.n_var + 3], g[:default.space.n_var + 3])


def test_uniform_compressions_change_one_dimension_at_a_time(default):
    joint = JointSpace(default, JOINT, {"pruning": {"keep": [0.5, 0.75, 1.0]}, "quantization": {"precisions": ["int8", "fp32"]}})
    variants = [joint.space.decode(g) for g in joint.uniform_compressions(joint.space.smallest())]
    arch = default.smallest_config()
    assert all({k: v for k, v in c.items() if not k.startswith(("prune.", "quant."))} == arch for c in variants)
    seen = [({c[k] for k in c if k.startswith("prune.")}, {c[k] for k in c if k.startswith("quant.")}) for c in variants]
    assert seen == [({1.0}, {"fp32"}), ({0.5}, {"fp32"}), ({0.75}, {"fp32"}), ({1.0}, {"int8"})]


def test_a_joint_space_starts_from_its_ends_and_the_smallest_architecture_compressed_uniformly(default):
    joint = JointSpace(default, JOINT, {"pruning": {"keep": [0.5, 0.75, 1.0]}, "quantization": {"precisions": ["int8", "fp32"]}})
    ends = joint.space.ends()  # what a run's initial design and linas measure first
    keys = [joint.space.key(g) for g in ends]
    assert keys[:2] == [joint.space.key(joint.space.smallest()), joint.space.key(joint.space.largest())]
    assert keys[2:] == [joint.space.key(g) for g in joint.uniform_compressions(joint.space.smallest())]
    assert [g.tolist() for g in default.space.ends()] == [default.space.smallest().tolist(), default.space.largest().tolist()]


def test_a_supernet_without_units_is_refused():
    vit = supernets.create("elastic_vit")
    with pytest.raises(HwnasError, match="pruning"):
        JointSpace(vit, ["architecture", "pruning"])


# --- pruning --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["mbv3", "resnet"])
def test_pruning_makes_layers_truly_smaller(family, default, resnet, data):
    net = default if family == "mbv3" else resnet
    config = net.largest_config()
    x = data.val[0][:64]
    sizes = {}
    for keep in (1.0, 0.75, 0.5):
        model = materialize(net, {**config, **all_stages(net, keep)}, data.train[0], 128, 0)
        assert model(x).shape == (64, 10)
        sizes[keep] = (count_params(model), count_flops(model, data.input_shape))
        # the runtime sees the smaller layers too
        np.testing.assert_allclose(run(to_onnx(model, x), x), model(x).detach().numpy(), rtol=1e-3, atol=1e-4)
    assert sizes[1.0][0] > sizes[0.75][0] > sizes[0.5][0]
    assert sizes[1.0][1] > sizes[0.75][1] > sizes[0.5][1]
    # half the inner channels of every block: well below 3/4 of the MACs (stem/head/projections stay)
    assert sizes[0.5][1] < 0.75 * sizes[1.0][1]


def test_keep_one_is_the_unpruned_network(default, data):
    config = default.sample(np.random.default_rng(3))
    a = materialize(default, config, data.train[0], 128, 0)
    b = materialize(default, {**config, **all_stages(default, 1.0)}, data.train[0], 128, 0)
    x = data.val[0][:32]
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_pruning_keeps_the_channels_of_largest_l1_norm(default):
    config = default.largest_config()
    sub = default.extract(config)
    model = dimension("pruning").restructure(default.extract(config), {"prune.stage1": 0.5},
                                             default.compression_units(config))
    full, pruned = sub.blocks[4].conv_pw.weight, model.blocks[4].conv_pw.weight  # first block of stage 1
    k = kept_channels(full.shape[0], 0.5)
    assert pruned.shape[0] == k < full.shape[0]
    norms = full.abs().sum((1, 2, 3))
    kept = torch.sort(torch.topk(norms, k).indices).values
    torch.testing.assert_close(pruned, full[kept])
    assert model.blocks[0].conv_pw.weight.shape == sub.blocks[0].conv_pw.weight.shape  # stage 0 untouched


def test_pruning_recalibrated_keeps_accuracy_close(default, data):
    config = default.largest_config()
    X, y = data.val[0][:600], data.val[1][:600]
    full = measure_accuracy(materialize(default, config, data.train[0], 250, 0), X, y)
    half = measure_accuracy(materialize(default, {**config, **all_stages(default, 0.5)}, data.train[0], 250, 0), X, y)
    assert full - 0.05 < half <= full + 0.01  # BN recalibration rescues most of it


# --- quantization ---------------------------------------------------------------------------
def test_onnx_scope_names_the_exporters_node_prefix():
    assert onnx_scope("blocks.3") == "/blocks/blocks.3/"
    assert onnx_scope("stem") == "/stem/"
    assert onnx_scope("classifier") == "/classifier/"


def _int8_layers(onnx_bytes):
    """Conv/Gemm nodes whose weights are int8 (fed by a DequantizeLinear): onnxruntime runs them in int8."""
    graph = onnx.load_from_string(onnx_bytes).graph
    feeds = {o: n for n in graph.node for o in n.output}
    return {n.name for n in graph.node if n.op_type in ("Conv", "Gemm")
            and feeds.get(n.input[1]) is not None and feeds[n.input[1]].op_type == "DequantizeLinear"}


def test_int8_units_only_are_quantized(default, data):
    config = with_values(default.largest_config(), quant__block1="int8", quant__head="int8")
    model = materialize(default, config, data.train[0], 128, 0)
    assert isinstance(model, QuantizedModel)
    graph = onnx.load_from_string(to_onnx(model, data.val[0][:1])).graph
    layers = {n.name for n in graph.node if n.op_type in ("Conv", "Gemm")}
    wanted = {n for n in layers if n.startswith(("/blocks/blocks.1/", "/head/", "/classifier/"))}
    assert len(wanted) == 5  # block 1: pw, dw, pwl; head conv; classifier
    assert _int8_layers(to_onnx(model, data.val[0][:1])) == wanted


def test_int8_accuracy_is_the_onnxruntime_int8_models(default, data):
    """Accuracy of a quantized candidate is the real onnxruntime QDQ model's, which stays close to fp32."""
    config = default.sample(np.random.default_rng(2))
    int8 = {**config, **{f"quant.{u}": "int8" for u in default.compression_unit_names()}}
    fp32_model = materialize(default, config, data.train[0], 250, 0)
    int8_model = materialize(default, int8, data.train[0], 250, 0)
    X, y = data.val[0][:600], data.val[1][:600]
    ort_pred = run(session(to_onnx(int8_model, X[:1])), X).argmax(1)
    torch_pred = int8_model(X).argmax(1).numpy()
    np.testing.assert_array_equal(ort_pred, torch_pred)
    fp32_pred = fp32_model(X).argmax(1).numpy()
    assert ((fp32_pred == ort_pred).mean() >= 0.95  # int8 really quantized, and sanely
            and (fp32_pred != ort_pred).any())
    assert abs((ort_pred == y.numpy()).mean() - (fp32_pred == y.numpy()).mean()) < 0.02


def test_int8_resnet_shortcut_pool_is_folded_into_its_conv(resnet, data):
    """An int8 unit's pool + 1x1 conv deploys as one strided conv, exactly; fp32 units and pools that do not
    tile their input keep the pool (onnxruntime's int8 average pool is slow, its fp32 one is not)."""
    model = resnet.extract(resnet.largest_config())
    x = data.val[0][:8]
    every_block = [f"blocks.{i}" for i in range(len(model.blocks))]
    folded = fold_pool_convs(model, x[:1], every_block)
    pools = [m for m in folded.modules() if isinstance(m, torch.nn.AvgPool2d)]
    assert not pools and sum(isinstance(m, torch.nn.AvgPool2d) for m in model.modules()) == 2
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    first_pooling = next(i for i, b in enumerate(model.blocks)
                         if b.downsample is not None and isinstance(b.downsample[0], torch.nn.AvgPool2d))
    only_one = fold_pool_convs(model, x[:1], [f"blocks.{first_pooling}"])
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in only_one.modules()) == 1
    odd = torch.nn.Sequential(torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                              torch.nn.Conv2d(3, 4, 1, bias=False))
    assert isinstance(fold_pool_convs(odd, torch.randn(1, 3, 7, 7), [""])[0], torch.nn.AvgPool2d)  # 7 = 2x3 + 1
    assert not isinstance(fold_pool_convs(odd, torch.randn(1, 3, 8, 8), [""])[0], torch.nn.AvgPool2d)

    int8 = {**resnet.largest_config(), **{f"quant.{u}": "int8" for u in resnet.compression_unit_names()}}
    quantized = materialize(resnet, int8, data.train[0], 64, 0)
    graph = onnx.load_from_string(to_onnx(quantized, x[:1])).graph
    assert not [n for n in graph.node if "AveragePool" in n.op_type]
    # energy counts the int8 layers as they deploy: the folded conv does s^2 times the 1x1 conv's MACs
    counted = count_by_precision(quantized, data.input_shape)
    assert set(counted) == {"int8"}
    assert counted["int8"].macs == pytest.approx(count_flops(folded, data.input_shape) / 2)
    assert counted["int8"].macs > count_flops(model, data.input_shape) / 2


def test_cost_only_model_has_the_deployed_graph(default, data):
    """Costs are measured on a model calibrated on few images: same layers and ops as the shipped one."""
    config = with_values(default.sample(np.random.default_rng(5)), prune__stage0=0.5, quant__block2="int8",
                         quant__stem="int8")
    ops = []
    for images in (64, 500):
        graph = onnx.load_from_string(to_onnx(materialize(default, config, data.train[0], images, 0),
                                              data.val[0][:1])).graph
        ops.append([(n.op_type, n.name) for n in graph.node])
    assert ops[0] == ops[1]


def test_quantized_models_are_timed_in_onnxruntime_only(default, data):
    config = with_values(default.smallest_config(), quant__block0="int8")
    model = materialize(default, config, data.train[0], 64, 0)
    fast = dict(batch_size=2, threads=1, warmup=1, repeats=3)
    assert create_backend("onnxruntime-cpu", **fast).measure(model, data.input_shape).latency_ms > 0
    with pytest.raises(HwnasError, match="onnxruntime-cpu"):
        create_backend("torch-cpu", **fast).measure(model, data.input_shape)


# --- experiment files -----------------------------------------------------------------------
BASE = {
    "name": "joint",
    "space": {"supernet": "elastic_mbv3", "checkpoint": "default", "dimensions": JOINT},
    "objectives": {"accuracy": "max", "latency_ms": "min"},
}


def write(tmp_path, space=None, **top):
    data = {**BASE, **top, "space": {**BASE["space"], **(space or {})}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_choices(tmp_path):
    cfg = load_config(write(tmp_path, {"pruning": {"keep": [1.0, 0.6]}}))
    assert cfg.devices[0].backend == "onnxruntime-cpu"  # the default CPU backend
    assert cfg.space.dimension_options == {"pruning": {"keep": [1.0, 0.6]}}
    joint = JointSpace(supernets.load_default(), cfg.space.dimensions, cfg.space.dimension_options)
    assert joint.space.variables[joint.arch_slice.stop].options == (0.6, 1.0)
    assert joint.space.variables[-1].options == ("int8", "fp32")


@pytest.mark.parametrize("space, top, key, fragment", [
    ({"pruning": {"keep": [1.0, 1.5]}}, {}, "space.pruning.keep", "(0, 1]"),
    ({"pruning": {"keep": []}}, {}, "space.pruning.keep", "at least 1"),
    ({"pruning": {"ratio": [0.5]}}, {}, "space.pruning.ratio", "allowed: keep"),
    ({"quantization": {"precisions": ["fp32", "int4"]}}, {}, "space.quantization.precisions",
     "no int4 convolution kernel"),
    ({"dimensions": ["architecture", "sparsity"]}, {}, "space.dimensions", "allowed: architecture, pruning"),
    ({"dimensions": ["architecture"], "pruning": {"keep": [0.5, 1.0]}}, {}, "space.pruning",
     "not in space.dimensions"),
    ({"prunning": {"keep": [0.5]}}, {}, "space.prunning", "unknown key"),
    ({"supernet": None, "table": "x.csv", "tabular_space": "nb201"}, {}, "space.dimensions", "supernet"),
    ({}, {"devices": [{"name": "local-cpu", "backend": "torch-cpu"}]}, "devices[0].backend", "onnxruntime-cpu"),
    ({"supernet": "elastic_vit", "checkpoint": "VIT"}, {}, "space.dimensions", "pruning"),
])
def test_bad_compression_settings_are_one_line(tmp_path, space, top, key, fragment):
    if space.get("checkpoint") == "VIT":
        space["checkpoint"] = str(supernets.save_checkpoint(supernets.create("elastic_vit"), tmp_path / "vit.pt"))
    path = write(tmp_path, space, **top)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {key}"), msg
    assert fragment in msg and "\n" not in msg, msg


def test_cli_bad_keep_exits_2_one_line(tmp_path):
    path = write(tmp_path, {"pruning": {"keep": [2]}})
    proc = subprocess.run([sys.executable, "-m", "hwnas.cli", "validate", str(path)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "space.pruning.keep" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_joint_search_end_to_end_from_yaml(tmp_path):
    """hwnas run on architecture x pruning x quantization: compressed candidates measured on onnxruntime."""
    path = write(tmp_path, {"pruning": {"keep": [0.5, 1.0]}},
                 devices=[{"name": "local-cpu", "batch_size": 4, "warmup": 1, "repeats": 3}],
                 objectives={"accuracy": {"goal": "max", "source": "predicted"}, "latency_ms": "min"},
                 budgets=["latency_ms <= 1000", "energy_mJ <= 1000"],  # local-cpu has no profile: energy counted
                 strategy={"population": 4, "generations": 1, "seed": 0, "initial_samples": 5},
                 accuracy_eval={"calib_images": 64, "images": 200})
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    import csv

    with open(out / "candidates.csv") as f:
        rows = list(csv.DictReader(f))
    with open(out / "front.csv") as f:
        front = list(csv.DictReader(f))
    assert {"prune.stage0", "prune.stage2", "quant.stem", "quant.block11", "quant.head"} <= set(rows[0])
    assert {r["prune.stage0"] for r in rows} <= {"0.5", "1.0"}
    assert any(r["quant.stem"] == "int8" for r in rows) and any("int8=" in r["arch"] for r in rows)
    assert front and all(r["accuracy_source"] == "measured" and r["latency_ms_source"] == "measured"
                         for r in front)
    report = (out / "report.md").read_text()
    assert "dimensions: architecture, pruning, quantization" in report and "onnxruntime-cpu" in report
    # Energy of every candidate counted from its own layers, labelled as the estimate it is.
    assert all(float(r["energy_mJ"]) > 0 and r["energy_mJ_source"] == "estimated" for r in rows)
    assert "each candidate's own layers" in report

    # The user's next step: export a compressed candidate as searched (its int8 QDQ graph, its pruned layers).
    import json

    import hwnas

    pick = next(r for r in rows if "int8=" in r["arch"] and r["accuracy_source"] == "measured")
    exported = tmp_path / "export"
    assert main(["export", str(out), "--pick", pick["id"], "--format", "onnx,onnx-int8,pt2", "--out",
                 str(exported), "--measure"]) == 0
    [folder] = [p for p in exported.iterdir() if (p / "model.json").is_file()] or [exported]
    info = json.loads((folder / "model.json").read_text())
    parity = info["parity"]["formats"]
    assert parity["onnx-int8"]["top1_agreement"] >= 0.99 and parity["onnx-int8"]["required"]
    assert parity["onnx"]["max_abs_diff"] <= 1e-4 and info["int8_units"]
    assert info["reproduced"]["accuracy"] == pytest.approx(float(pick["accuracy"]), abs=1e-9)  # the searched int8 model
    timed = info["measured_at_export"]  # the QDQ file is what the run timed; its figure sits beside it
    assert timed["searched_format"] == "onnx-int8" and 0.25 < timed["ratio_to_run"] < 4
    # A member the run kept in fp32: its onnx-int8 is whole-model int8 it never searched, reported, not required.
    plain = next(r for r in rows if "int8=" not in r["arch"] and r["accuracy_source"] == "measured")
    assert main(["export", str(out), "--pick", plain["id"], "--format", "onnx,onnx-int8", "--out",
                 str(tmp_path / "export-fp32")]) == 0
    plain_info = json.loads((tmp_path / "export-fp32" / "model.json").read_text())
    assert not plain_info["parity"]["formats"]["onnx-int8"]["required"] and "int8_units" not in plain_info
    model = hwnas.load(folder)  # the pruned fp32 layers load into their own (narrower) skeleton
    n_params = sum(p.numel() for p in model.parameters())
    full = hwnas.supernets.load_default().extract(hwnas.supernets.load_default().largest_config())
    assert n_params < sum(p.numel() for p in full.parameters())


def test_candidate_energy_counts_int8_units_and_pruned_stages(default, data):
    """The search's energy of a genome is the estimate of the model that genome materializes."""
    from hwnas.devices.energy import CandidateEnergy, estimate_model

    joint = JointSpace(default, ["architecture", "pruning", "quantization"])
    counted = CandidateEnergy(default, joint.space, data.input_shape, batch_size=8)
    config = with_values(default.largest_config(), quant__block4="int8", quant__head="int8")
    config = {**{v.name: "fp32" for v in joint.space.variables if v.name.startswith("quant.")},
              **{v.name: 1.0 for v in joint.space.variables if v.name.startswith("prune.")}, **config}
    variants = [config, {**config, **all_stages(default, 0.5)}, {**config, "quant.block4": "fp32", "quant.head": "fp32"}]
    predicted = counted.predict(np.stack([joint.space.encode(c) for c in variants]))
    for config, value in zip(variants, predicted):
        model = materialize(default, config, data.train[0], 64, 0)
        assert value == pytest.approx(estimate_model(model, data.input_shape, batch_size=8)["energy_mJ"], rel=1e-9)
    assert predicted[1] < predicted[0] < predicted[2]  # pruned < int8 units < all fp32


def test_energy_estimate_knows_int8_layers_and_pruned_channels(default, data):
    from hwnas.devices.energy import count_by_precision, count_model, estimate_model

    config = default.largest_config()
    fp32 = materialize(default, config, data.train[0], 64, 0)
    int8 = materialize(default, with_values(config, quant__block4="int8", quant__head="int8"), data.train[0], 64, 0)
    pruned = materialize(default, {**config, **all_stages(default, 0.5)}, data.train[0], 64, 0)
    parts = count_by_precision(int8, data.input_shape)
    assert set(parts) == {"fp32", "int8"} and parts["int8"].macs > 0
    assert parts["fp32"].macs + parts["int8"].macs == count_model(fp32, data.input_shape).macs  # same layers
    e = {name: estimate_model(m, data.input_shape, batch_size=8)["energy_mJ"]
         for name, m in (("fp32", fp32), ("int8", int8), ("pruned", pruned))}
    assert e["int8"] < e["fp32"] and e["pruned"] < e["fp32"]


@requires(FMNIST)
def test_compression_fmnist_experiment_at_reduced_size(tmp_path):
    """experiments/compression_fmnist.yaml (shipped Fashion-MNIST supernet, joint space) searches, only smaller."""
    cfg = yaml.safe_load((ROOT / "experiments" / "compression_fmnist.yaml").read_text())
    assert cfg["space"]["dimensions"] == JOINT
    cfg["data"] = f"fashion-mnist:{FMNIST}"
    assert cfg["strategy"]["name"] == "linas" and cfg["objectives"]["accuracy"]["source"] == "measured"
    cfg["strategy"].update(evaluations=14)
    cfg["accuracy_eval"].update(images=200, calib_images=100)
    cfg["executor"] = {"kind": "local"}  # Ray is tested with the session's cluster elsewhere
    path = tmp_path / "compression-small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    import csv

    with open(tmp_path / "run" / "front.csv") as f:
        front = list(csv.DictReader(f))
    assert front and all(r["accuracy_source"] == "measured" for r in front)
    assert "prune.stage2" in front[0] and max(float(r["accuracy"]) for r in front) > 0.8


def test_runs_from_before_the_onnxruntime_default_resume_on_torch(tmp_path):
    """A run folder whose store predates the onnxruntime default keeps timing torch eager when resumed."""
    from hwnas.pipeline import DEFAULT_BACKEND_META, load_run_config
    from hwnas.store import ResultsStore

    run = tmp_path / "old-run"
    run.mkdir()
    data = {**BASE, "space": {"supernet": "elastic_mbv3", "checkpoint": "default"}}
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    store = ResultsStore(run / "results.sqlite")  # an old run: candidates, no default_backend in its meta
    net = supernets.load_default()
    store.add_candidate("k", net.space.largest(), net.largest_config(), 0)
    store.close()
    assert load_run_config(run).devices[0].backend == "torch-cpu"
    store = ResultsStore(run / "results.sqlite")
    store.set_meta(DEFAULT_BACKEND_META, "onnxruntime-cpu")  # what a run started now records
    store.close()
    assert load_run_config(run).devices[0].backend == "onnxruntime-cpu"
    fresh = tmp_path / "fresh-run"  # a folder whose run stored nothing yet starts on the new default
    fresh.mkdir()
    (fresh / "config.yaml").write_text(yaml.safe_dump(data))
    ResultsStore(fresh / "results.sqlite").close()
    assert load_run_config(fresh).devices[0].backend == "onnxruntime-cpu"
