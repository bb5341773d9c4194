"""Lookup tables that know pruning and quantization (issue 18, item 4): keys, measuring on real
onnxruntime, calibration on whole compressed sub-networks, and the experiment gate."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from hwnas.cli import main
from hwnas.config import load_config
from hwnas.devices import measure as measure_module
from hwnas.devices.lut import (COMPRESSED, compressed_columns, compressed_parts, compressed_unit_keys, lut_parts,
                               normalized_options)
from hwnas.devices.predictors import CompressedCostModel, cost_model
from hwnas.devices.spaces import device_space
from hwnas.dimensions import JointSpace
from hwnas.errors import ConfigError, HwnasError

FAST = dict(warmup=1, repeats=3, max_repeats=3)
OPTIONS = {"pruning": {"keep": [0.5, 1.0]}, "quantization": {}}
JOINT = ["architecture", "pruning", "quantization"]


pytestmark = pytest.mark.usefixtures("home")  # an empty user device registry per test (conftest)


@pytest.fixture(scope="module")
def tiny(tiny_mbv3):
    """The small elastic_mbv3 (conftest) as (space name, checkpoint): its compressed table has 136 entries."""
    return f"elastic_mbv3:{tiny_mbv3}", tiny_mbv3


@pytest.fixture(scope="module")
def measured(tmp_path_factory, tiny):
    """Device 'tinyort' with an architecture-only table (onnxruntime) and then a compressed one."""
    spec, _ = tiny
    root = tmp_path_factory.mktemp("measured") / "devices"
    patch = pytest.MonkeyPatch()
    patch.setattr(measure_module, "N_COMPRESSED_CALIBRATION", 24)  # 9 coefficients on the tiny space: 5 coef -> 24
    try:
        arch = measure_module.measure_device("tinyort", spec, "onnxruntime-cpu", batch_size=2, threads=1, home=root,
                                             **FAST)
        before = arch["profile"].file("lut", spec, "json").read_text()
        result = measure_module.measure_device("tinyort", spec, "onnxruntime-cpu", batch_size=2, threads=1,
                                               home=root, dimensions=OPTIONS, **FAST)
    finally:
        patch.undo()
    return root, result, before


def joint_of(spec, options=OPTIONS):
    return JointSpace(device_space(spec).supernet, JOINT, options)


# --- keys -----------------------------------------------------------------------------------------
def test_keys_cover_every_choice_keep_and_precision(tiny):
    spec, _ = tiny
    dspace = device_space(spec)
    models, entries = compressed_parts(dspace, normalized_options(["pruning", "quantization"], OPTIONS))
    keys = [k for k, _, _ in entries]
    assert len(keys) == len(set(keys)) == 2 * (2 * 2 + 2 * 4 * 2 * 2 * 2)  # r x (stem+head x prec + slots x k x e x keep x prec)
    assert {"block3_k5_e3_p0.5_int8@16", "block0_k3_e2_int8@12", "block2_k3_e3_p0.5@12", "stem_int8@12",
            "head_int8@16", "head@12"} <= set(keys)
    assert {k for k, _, _ in lut_parts(dspace)} <= set(keys)  # keep 1.0 + fp32: the architecture table's keys
    # one part model per block choice x keep x precision serves both resolutions; stems resize, so one per r
    assert len(models) == 2 * 2 + 2 + 4 * 2 * 2 * 2 * 2
    assert {m for k, m, _ in entries if k.startswith("block3_k5_e3_p0.5_int8@")} == {"block3_k5_e3_p0.5_int8"}


def test_a_config_maps_to_its_units_keys(tiny):
    spec, _ = tiny
    dspace = device_space(spec)
    joint = joint_of(spec)
    config = joint.space.decode(joint.space.largest())
    config.update({"r": 12, "d0": 1, "prune.stage1": 0.5, "quant.stem": "int8", "quant.block2": "int8"})
    keys = compressed_unit_keys(dspace, config)
    k2, e2, k3, e3 = config["ks2"], config["e2"], config["ks3"], config["e3"]
    assert [k for k, _, _ in keys] == ["stem_int8@12", f"block0_k{config['ks0']}_e{config['e0']}@12",
                                       f"block2_k{k2}_e{e2}_p0.5_int8@12", f"block3_k{k3}_e{e3}_p0.5@12", "head@12"]
    assert [(s, q) for _, s, q in keys] == [(None, True), (0, False), (1, True), (1, False), (None, False)]


# --- measuring and calibration ------------------------------------------------------------------
def test_measure_writes_the_compressed_table_and_keeps_the_architecture_table(measured, tiny):
    root, result, before = measured
    spec, _ = tiny
    profile = result["profile"]
    assert profile.file("lut", spec, "json").read_text() == before  # architecture table unchanged
    assert profile.has_space(spec)  # and its samples
    doc = json.loads(profile.file(COMPRESSED, spec, "json").read_text())
    assert result["entries"] == len(doc["entries"]) == 136 and result["samples"] == len(doc["samples"]) == 24
    assert doc["dimensions"] == {"pruning": {"keep": [0.5, 1.0]}, "quantization": {"precisions": ["int8", "fp32"]}}
    assert doc["method"] == "alone" and doc["backend"]["name"] == "onnxruntime-cpu"
    assert all(e["latency_ms"] > 0 for e in doc["entries"].values())
    # int8 entries are timed, not derived from fp32: their ratios to fp32 differ from part to part
    ratios = [doc["entries"][k]["latency_ms"] / doc["entries"][k.replace("_int8", "")]["latency_ms"]
              for k in doc["entries"] if "_int8" in k]
    assert np.std(np.log(ratios)) > 0.01
    assert {json.dumps(r["config"], sort_keys=True) for r in doc["samples"]}.__len__() == 24
    # the architecture-only cost model is the one it was
    assert not isinstance(cost_model("tinyort", spec, root), CompressedCostModel)


def test_calibrated_predictions_of_the_joint_genome(measured, tiny):
    root, _, _ = measured
    spec, _ = tiny
    joint = joint_of(spec)
    model = cost_model("tinyort", spec, root, joint=joint)
    assert isinstance(model, CompressedCostModel) and model.space is joint.space
    assert set(model.labels) == {"latency_ms", "energy_mJ", "power_W"} and model.labels["latency_ms"] == "fitted"
    assert len(model.latency_coef) == 2 * (1 + 2) + 1 and (model.latency_coef >= 0).all()
    G = joint.space.sample(np.random.default_rng(3), 8)
    out = model.predict(G)
    configs = [joint.space.decode(g) for g in G]
    assert np.allclose(out["latency_ms"], compressed_columns(model.dspace, model.table, configs) @ model.latency_coef)
    assert (out["latency_ms"] > 0).all() and np.isfinite(out["power_W"]).all()
    # the fit reproduces its own whole sub-networks (the tiny space's timings are noisy: a loose bound)
    fitted = model.latency(model.configs)
    assert np.median(np.abs(fitted - model.measured) / model.measured) < 0.25
    # a search over a subset of the measured choices (keep 0.5 only) is predicted from the same table
    narrow = joint_of(spec, {"pruning": {"keep": [0.5]}, "quantization": {"precisions": ["int8"]}})
    assert (cost_model("tinyort", spec, root, joint=narrow).predict(narrow.space.sample(np.random.default_rng(0), 3))
            ["latency_ms"] > 0).all()


def test_choices_the_table_does_not_hold_are_refused(measured, tiny):
    root, _, _ = measured
    spec, _ = tiny
    with pytest.raises(HwnasError, match=r"does not cover the search \(pruning keep 0.75 not measured\)"):
        cost_model("tinyort", spec, root, joint=joint_of(spec, {"pruning": {"keep": [0.75, 1.0]}}))


def test_measure_bad_input_is_one_line(tiny, capsys):
    spec, _ = tiny
    for argv, fragment in [(["--dimensions", "sparsity"], "allowed: pruning, quantization"),
                           (["--dimensions", "pruning", "--backend", "torch-cpu"], "allowed: --backend onnxruntime-cpu")]:
        argv = ["devices", "measure", "x", "--space", spec] + (["--backend", "onnxruntime-cpu"] if "--backend" not in argv
                                                               else []) + argv
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and "\n" not in err, err


# --- the experiment gate ------------------------------------------------------------------------------
def experiment(tmp_path, tiny, device="tinyort", pruning=None):
    _, path = tiny
    space = {"supernet": "elastic_mbv3", "checkpoint": str(path), "dimensions": JOINT,
             "pruning": pruning or {"keep": [0.5, 1.0]}}
    data = {"name": "lut", "space": space, "data": "fmnist-mini", "devices": [{"name": device}],
            "objectives": {"accuracy": "max", "latency_ms": {"goal": "min", "source": "predicted"}},
            "budgets": ["power_W <= 100"]}
    file = tmp_path / "exp.yaml"
    file.write_text(yaml.safe_dump(data))
    return file


def test_predicted_latency_of_a_compression_search_needs_a_compressed_table(tmp_path, tiny, monkeypatch):
    spec, _ = tiny
    root = tmp_path / "arch-only" / "devices"
    measure_module.measure_device("archonly", spec, "onnxruntime-cpu", batch_size=2, threads=1, home=root, **FAST)
    monkeypatch.setenv("HWNAS_HOME", str(root.parent))
    path = experiment(tmp_path, tiny, device="archonly")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: objectives.latency_ms") and "\n" not in msg, msg
    assert f"hwnas devices measure archonly --space {spec} --backend onnxruntime-cpu --experiment {path}" in msg
    proc = subprocess.run([sys.executable, "-m", "hwnas.cli", "validate", str(path)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "HWNAS_HOME": str(root.parent)})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_compressed_table_is_accepted_and_predicts_in_the_run(measured, tmp_path, tiny, monkeypatch):
    root, _, _ = measured
    monkeypatch.setenv("HWNAS_HOME", str(root.parent))
    cfg = load_config(experiment(tmp_path, tiny))  # latency and power predicted: accepted
    assert cfg.space.dimensions == JOINT
    # keep ratios the table lacks: refused, naming the command with this experiment file
    path = experiment(tmp_path, tiny, pruning={"keep": [0.75, 1.0]})
    with pytest.raises(ConfigError, match="pruning keep 0.75 not measured.*--experiment"):
        load_config(path)

    from hwnas.pipeline import Experiment

    (tmp_path / "run").mkdir()
    exp = Experiment(cfg, tmp_path / "run")
    try:
        G = exp.space.sample(np.random.default_rng(1), 4)
        latency = exp._predictor("latency_ms")(G)
        model = exp._cost_models["tinyort"]
        assert isinstance(model, CompressedCostModel)
        assert np.allclose(latency, model.latency([exp.space.decode(g) for g in G]) * model.latency_scale)
    finally:
        exp.store.close()


def test_measure_cli_reads_the_choices_from_an_experiment(tmp_path, tiny, monkeypatch, capsys):
    spec, _ = tiny
    monkeypatch.setattr(measure_module, "N_COMPRESSED_CALIBRATION", 12)
    path = experiment(tmp_path, tiny, pruning={"keep": [0.5]})
    monkeypatch.setitem(measure_module.DEFAULT_TIMING, "repeats", 2)
    monkeypatch.setitem(measure_module.DEFAULT_TIMING, "max_repeats", 2)
    assert main(["devices", "measure", "cli", "--space", spec, "--backend", "onnxruntime-cpu", "--batch-size", "2",
                 "--experiment", str(path), "--home", str(tmp_path / "d"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "compressed lookup-table entries (pruning: keep 0.5; quantization: precisions int8/fp32)" in out
    doc = json.loads(next((tmp_path / "d" / "cli").glob(f"{COMPRESSED}-*.json")).read_text())
    assert doc["dimensions"]["pruning"] == {"keep": [0.5]} and len(doc["samples"]) == 12
