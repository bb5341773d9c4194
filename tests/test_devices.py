"""Device profiles, the `hwnas devices` CLI, per-device cost models, backends and energy estimates."""

import csv
import math

import numpy as np
import pytest
import torch
from conftest import BENCH, requires

from hwnas.cli import main
from hwnas.devices import backends, energy, registry
from hwnas.devices.lut import active_parts, lut_parts
from hwnas.devices.predictors import cost_model
from hwnas.devices.spaces import device_space
from hwnas.errors import HwnasError

FAST = dict(warmup=1, repeats=3, max_repeats=3)


def fewshot_artifact(space):
    from hwnas.predictors.fewshot import artifact_path

    return pytest.mark.skipif(not artifact_path(space).is_file(),
                              reason=f"pretrained few-shot predictor for {space} not built yet")


pytestmark = pytest.mark.usefixtures("home")  # an empty user device registry per test (conftest)


@pytest.fixture(scope="session")
def tiny_space(tiny_mbv3):
    """The small elastic_mbv3 checkpoint (conftest) as a space name: measuring its lookup table takes seconds."""
    return f"elastic_mbv3:{tiny_mbv3}"


@pytest.fixture(scope="session")
def measured_home(tmp_path_factory, tiny_space):
    """A registry with device 'tinycpu' measured on the tiny space (shared: measuring costs seconds)."""
    from hwnas.devices.measure import measure_device

    root = tmp_path_factory.mktemp("measured") / "devices"
    result = measure_device("tinycpu", tiny_space, "torch-cpu", batch_size=2, threads=1, home=root, **FAST)
    return root, result


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def reference_rows(space, scale=1.0):
    archs = device_space(space).reference_archs()
    return [[a, f"{scale * (1 + i):.3f}"] for i, a in enumerate(archs)]


# --------------------------------------------------------------------------- shipped profiles
def test_shipped_profiles_hold_the_reference_samples():
    pixel3 = registry.get_device("pixel3")
    assert pixel3.shipped and pixel3.spec.kind == "phone" and "shipped" in pixel3.spec.labels
    samples = pixel3.samples("nb201")
    assert samples.archs == device_space("nb201").reference_archs()
    assert samples.metrics == ["latency_ms"] and (samples.values["latency_ms"] > 0).all()
    names = [p.name for p in registry.list_devices()]
    assert {"pixel3", "gold_6240", "v100_1"} <= set(names)


@requires(BENCH)
def test_shipped_profiles_match_the_tables():
    from hwnas.tabular import TabularBenchmark

    for space, device in (("nb201", "pixel3"), ("fbnet", "samsung_a50"), ("ofa_mbv3", "v100_1")):
        bench = TabularBenchmark.load(space)
        s = registry.get_device(device).samples(space)
        np.testing.assert_array_equal(s.genomes, bench.reference_genomes())
        np.testing.assert_allclose(s.values["latency_ms"], bench.lookup(s.genomes, device), rtol=1e-4)


def test_refs_prints_a_template(capsys):
    assert main(["devices", "refs", "--space", "nb201"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["arch", "latency_ms"] and len(rows) == 11
    assert all(r[1] == "" for r in rows[1:])
    assert [r[0] for r in rows[1:]] == registry.get_device("pixel3").samples("nb201").archs


# --------------------------------------------------------------------------- add: errors
BAD_SAMPLES = {
    "too few rows": (["arch", "latency_ms"], lambda rows: rows[:4], "at least 5"),
    "duplicate": (["arch", "latency_ms"], lambda rows: rows + [rows[0]], "duplicate of row 2"),
    "unknown arch": (["arch", "latency_ms"], lambda rows: [["|bogus~0|", "1"]] + rows, "row 2: column arch"),
    "negative": (["arch", "latency_ms"], lambda rows: [[rows[0][0], "-1"]] + rows[1:], "column latency_ms"),
    "zero": (["arch", "latency_ms"], lambda rows: [[rows[0][0], "0"]] + rows[1:], "finite number > 0"),
    "nan": (["arch", "latency_ms"], lambda rows: [[rows[0][0], "nan"]] + rows[1:], "finite number > 0"),
    "inf": (["arch", "latency_ms"], lambda rows: rows[:-1] + [[rows[-1][0], "inf"]], "row 11"),
    "text": (["arch", "latency_ms"], lambda rows: [[rows[0][0], "fast"]] + rows[1:], "not a number"),
    "wrong column": (["arch", "latency"], lambda rows: rows, "missing column(s) latency_ms"),
    "extra column": (["arch", "latency_ms", "temp_C"], lambda rows: [r + ["40"] for r in rows], "unknown column"),
}


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_add_rejects_bad_samples_and_leaves_registry_untouched(case, tmp_path, home, capsys):
    header, edit, expected = BAD_SAMPLES[case]
    path = write_csv(tmp_path / "s.csv", header, edit(reference_rows("nb201")))
    before = snapshot(home)
    assert main(["devices", "add", "mydev", "--space", "nb201", "--samples", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and expected in err, err
    assert snapshot(home) == before


def test_add_rejects_unknown_space_missing_file_and_existing_name(tmp_path, home, capsys):
    path = write_csv(tmp_path / "s.csv", ["arch", "latency_ms"], reference_rows("nb201"))
    assert main(["devices", "add", "d", "--space", "nb999", "--samples", str(path)]) == 2
    assert "unknown space 'nb999'" in capsys.readouterr().err
    assert main(["devices", "add", "d", "--space", "nb201", "--samples", str(tmp_path / "no.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["devices", "add", "pixel3", "--space", "nb201", "--samples", str(path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["devices", "add", "bad/name", "--space", "nb201", "--samples", str(path)]) == 2
    assert "invalid device name" in capsys.readouterr().err
    assert snapshot(home) == []
    assert main(["devices", "show", "nosuchdevice"]) == 2
    assert "unknown device 'nosuchdevice'" in capsys.readouterr().err


def test_failed_write_leaves_registry_untouched(tmp_path, home, monkeypatch):
    path = write_csv(tmp_path / "s.csv", ["arch", "latency_ms"], reference_rows("nb201"))
    registry.add_device("keep", "nb201", path)
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(registry, "write_samples", disk_full)
    with pytest.raises(OSError):
        registry.add_device("keep", "nb201", path, force=True)
    with pytest.raises(OSError):
        registry.add_device("other", "nb201", path)
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == before  # no temp folders left


# --------------------------------------------------------------------------- add / shadow / remove
def test_user_profile_shadows_shipped_and_keeps_its_other_spaces(tmp_path, home):
    rows = reference_rows("nb201", scale=2.0)
    path = write_csv(tmp_path / "s.csv", ["arch", "latency_ms"], rows)
    profile = registry.add_device("pixel3", "nb201", path, force=True)
    assert not profile.shipped and profile.path.parent == home
    again = registry.get_device("pixel3")
    assert not again.shipped and again.samples("nb201").values["latency_ms"][0] == 2.0
    assert again.has_space("fbnet")  # copied from the shipped profile
    assert "shipped" not in again.spec.labels
    registry.remove_device("pixel3")
    assert registry.get_device("pixel3").shipped  # the shipped one shows again
    with pytest.raises(HwnasError, match="read-only"):
        registry.remove_device("pixel3")


def test_cli_list_show_remove(tmp_path, capsys):
    path = write_csv(tmp_path / "s.csv", ["arch", "latency_ms", "energy_mJ"],
                     [r + ["3.5"] for r in reference_rows("fbnet")])
    from hwnas.devices.registry import add_device

    add_device("myboard", "fbnet", path, hardware="Raspberry Pi 4", kind="board")
    assert main(["devices", "list"]) == 0
    out = capsys.readouterr().out
    assert "myboard" in out and "Raspberry Pi 4" in out and "user" in out and "pixel3" in out
    assert main(["devices", "show", "myboard"]) == 0
    out = capsys.readouterr().out
    assert "kind: board" in out and "samples fbnet: 10 rows, metrics latency_ms, energy_mJ" in out
    assert main(["devices", "remove", "myboard"]) == 0
    assert main(["devices", "show", "myboard"]) == 2


# --------------------------------------------------------------------------- tabular cost models
@fewshot_artifact("nb201")
def test_add_then_predict_nb201_matches_the_fewshot_predictor(tmp_path, capsys):
    from hwnas.predictors.fewshot import load_pretrained

    shipped = registry.get_device("gold_6240").samples("nb201")
    path = write_csv(tmp_path / "s.csv", ["arch", "latency_ms"],
                     [[a, v] for a, v in zip(shipped.archs, shipped.values["latency_ms"])])
    assert main(["devices", "add", "mycpu", "--space", "nb201", "--samples", str(path), "--kind", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "leave-one-out Spearman rho" in out and "10 reference architectures" in out
    space = device_space("nb201")
    genomes = space.space.sample(np.random.default_rng(0), 200)
    archs = write_csv(tmp_path / "a.csv", ["arch"], [[space.format_arch(g)] for g in genomes])
    assert main(["devices", "predict", "mycpu", "--space", "nb201", "--archs", str(archs),
                 "--out", str(tmp_path / "p.csv")]) == 0
    with open(tmp_path / "p.csv") as f:
        predicted = np.array([float(r["latency_ms"]) for r in csv.DictReader(f)])
    direct = load_pretrained("nb201").adapt(shipped.values["latency_ms"], shipped.genomes).predict(genomes)
    np.testing.assert_allclose(predicted, direct, rtol=1e-5)
    model = cost_model("mycpu", "nb201")
    assert model.labels == {"latency_ms": "fitted", "energy_mJ": "estimated", "power_W": "estimated"}


def every_nb201_cell():
    return np.array(np.unravel_index(np.arange(5**6), (5,) * 6)).T


@fewshot_artifact("nb201")
def test_tabular_energy_and_power_are_estimated_without_energy_samples(tmp_path, capsys):
    """Horowitz figures on the space's work counts, at the profile's batch size and precision."""
    dspace = device_space("nb201")
    G = every_nb201_cell()
    c = dspace.tspace.counts(G)  # = energy.count_model on the built networks (tests/test_tabular.py)
    model = cost_model("pixel3", "nb201")  # shipped: latency samples only, batch 1, fp32
    assert model.labels == {"latency_ms": "fitted", "energy_mJ": "estimated", "power_W": "estimated"}
    out = model.predict(G)
    np.testing.assert_allclose(out["energy_mJ"], (c[:, 0] * 4.6 + (c[:, 1] + c[:, 2]) * 4 * 160) * 1e-9)
    # Power divides by the predicted latency, floored at the fastest sample: never negative or infinite.
    floor = model.samples.values["latency_ms"].min()
    np.testing.assert_allclose(out["power_W"], out["energy_mJ"] / np.maximum(out["latency_ms"], floor))
    assert np.isfinite(out["power_W"]).all() and (out["power_W"] > 0).all()
    e = model.predict(np.stack([np.zeros(6, int), np.full(6, 3)]))["energy_mJ"]
    assert e[1] > 5 * e[0]  # all 3x3 convs against no op at all
    # A batch reads the weights once; int8 moves a byte per value.
    path = write_csv(tmp_path / "s.csv", ["arch", "latency_ms"], reference_rows("nb201"))
    registry.add_device("npu", "nb201", path, batch_size=8, precision="int8")
    e8 = cost_model("npu", "nb201").predict(G[:50])["energy_mJ"]
    np.testing.assert_allclose(e8, (8 * c[:50, 0] * 0.23 + (c[:50, 1] + 8 * c[:50, 2]) * 160) * 1e-9)
    # `hwnas devices predict` marks the estimated columns.
    archs = write_csv(tmp_path / "a.csv", ["arch"], [[dspace.format_arch(g)] for g in G[:20]])
    assert main(["devices", "predict", "pixel3", "--space", "nb201", "--archs", str(archs),
                 "--out", str(tmp_path / "p.csv")]) == 0
    assert "(energy_mJ, power_W estimated analytically, not measured)" in capsys.readouterr().out
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["arch", "latency_ms", "energy_mJ", "power_W", "estimated"]
    assert all(r["estimated"] == "energy_mJ;power_W" for r in rows)
    np.testing.assert_allclose([float(r["energy_mJ"]) for r in rows], out["energy_mJ"][:20], rtol=1e-5)


@fewshot_artifact("fbnet")
def test_tabular_measured_energy_or_power_replace_the_estimate(tmp_path):
    rows = reference_rows("fbnet")
    G = device_space("fbnet").space.sample(np.random.default_rng(0), 100)
    path = write_csv(tmp_path / "e.csv", ["arch", "latency_ms", "energy_mJ"],
                     [r + [f"{0.5 * float(r[1]) + 0.1 * i:.3f}"] for i, r in enumerate(rows)])
    registry.add_device("metered", "fbnet", path)
    model = cost_model("metered", "fbnet")
    assert model.labels == {"latency_ms": "fitted", "energy_mJ": "fitted", "power_W": "derived"}
    out = model.predict(G)
    np.testing.assert_allclose(out["power_W"], out["energy_mJ"] / np.maximum(out["latency_ms"], model.latency_floor))
    path = write_csv(tmp_path / "p.csv", ["arch", "latency_ms", "power_W"],
                     [r + [f"{3.0 + 0.2 * i:.3f}"] for i, r in enumerate(rows)])
    registry.add_device("powered", "fbnet", path)
    model = cost_model("powered", "fbnet")
    assert model.labels == {"latency_ms": "fitted", "energy_mJ": "derived", "power_W": "fitted"}
    out = model.predict(G)
    assert list(out) == ["latency_ms", "energy_mJ", "power_W"]
    np.testing.assert_allclose(out["energy_mJ"], out["power_W"] * np.maximum(out["latency_ms"], model.latency_floor))


@requires(BENCH / "nb201.csv.gz")
@fewshot_artifact("nb201")
def test_nb201_run_with_estimated_energy_objective_and_power_budget(tmp_path, capsys):
    """pixel3 has no energy samples: energy and power come from the estimate, the report says so."""
    import yaml

    cfg = {"name": "nb201-energy", "space": {"table": str(BENCH / "nb201.csv.gz"), "tabular_space": "nb201"},
           "data": "cifar10", "devices": [{"name": "pixel3", "backend": "table"}],
           "objectives": {"accuracy": "max", "energy_mJ": {"goal": "min", "source": "predicted"}},
           "budgets": ["latency_ms <= 10", "power_W <= 0.2"],
           "strategy": {"population": 6, "generations": 2, "seed": 0}}
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert "energy_mJ (estimated)" in capsys.readouterr().out
    with open(out / "front.csv") as f:
        front = list(csv.DictReader(f))
    assert front
    for r in front:  # latency measured (the table), energy and power estimated; budgets hold
        assert (r["latency_ms_source"], r["energy_mJ_source"], r["power_W_source"]) == \
            ("measured", "estimated", "estimated")
        assert float(r["latency_ms"]) <= 10 and float(r["power_W"]) <= 0.2
    dspace = device_space("nb201")
    expected = cost_model("pixel3", "nb201").predict(np.stack([dspace.parse_arch(r["arch"]) for r in front]))
    np.testing.assert_allclose([float(r["energy_mJ"]) for r in front], expected["energy_mJ"])
    report = (out / "report.md").read_text()
    assert "energy_mJ (min, estimated)" in report and "power_W <= 0.2 (estimated)" in report
    assert "(est.)" in report and "energy_mJ, power_W are analytical estimates" in report


# --------------------------------------------------------------------------- supernet lookup tables
def test_lookup_table_parts_compose_to_the_subnetwork(tiny_space):
    """Running a sub-network's table parts in order gives the extracted network's output."""
    dspace = device_space(tiny_space)
    parts = {key: (make, shape) for key, make, shape in lut_parts(dspace)}
    x = torch.randn(2, *dspace.input_shape)
    for g in dspace.space.sample(np.random.default_rng(0), 4):
        y = x
        for key in active_parts(dspace, g):
            make, shape = parts[key]
            assert tuple(y.shape[1:]) == shape
            y = make()(y)
        with torch.no_grad():
            expected = dspace.supernet.extract(dspace.space.decode(g))(x)
        torch.testing.assert_close(y, expected)


def test_measure_builds_table_and_calibrated_model(measured_home, tiny_space, tmp_path, capsys):
    root, result = measured_home
    profile = result["profile"]
    from hwnas.devices.lut import stage_sums, sum_parts
    from hwnas.devices.measure import N_CALIBRATION

    dspace = device_space(tiny_space)
    assert result["entries"] == len(lut_parts(dspace)) and result["samples"] == N_CALIBRATION
    assert profile.spec.backend == "torch-cpu" and profile.spec.batch_size == 2 and profile.spec.kind == "cpu"
    assert (profile.spec.clock, profile.spec.statistic) == ("wall", "min")  # how it was timed, for runs on it
    assert profile.file("lut", tiny_space, "json").is_file()
    samples = profile.samples(tiny_space)
    assert samples.archs[:10] == dspace.reference_archs() and len(set(samples.archs)) == N_CALIBRATION
    model = cost_model("tinycpu", tiny_space, root)
    assert model.method.startswith("per-block lookup table (parts timed in-context)") and "per stage" in model.method
    assert model.labels == {"latency_ms": "fitted", "energy_mJ": "estimated", "power_W": "estimated"}
    genomes = dspace.space.sample(np.random.default_rng(1), 20)
    out = model.predict(genomes)
    # the per-stage calibration: stem+head, each stage's blocks, a constant; all non-negative
    sums = stage_sums(dspace, model.table, genomes)
    np.testing.assert_allclose(sums.sum(1), sum_parts(dspace, model.table, genomes))
    assert (model.latency_coef >= 0).all() and len(model.latency_coef) == sums.shape[1] + 1
    np.testing.assert_allclose(out["latency_ms"], sums @ model.latency_coef[:-1] + model.latency_coef[-1])
    assert (out["latency_ms"] > 0).all() and (out["energy_mJ"] > 0).all()
    np.testing.assert_allclose(out["power_W"], out["energy_mJ"] / out["latency_ms"])
    # the largest sub-network costs more energy than the smallest
    e = model.predict(np.stack([dspace.space.smallest(), dspace.space.largest()]))["energy_mJ"]
    assert e[1] > e[0]
    archs = write_csv(tmp_path / "a.csv", ["arch"], [[a] for a in dspace.reference_archs()])
    assert main(["devices", "predict", "tinycpu", "--space", tiny_space, "--archs", str(archs), "--out",
                 str(tmp_path / "p.csv"), "--home", str(root)]) == 0
    assert "estimated" in capsys.readouterr().out
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and rows[0]["estimated"] == "energy_mJ;power_W"


def test_supernet_samples_without_table_use_mac_counts(tiny_space, tmp_path):
    """Samples added by hand (no table): the MAC sum, linearly calibrated, with measured energy fitted."""
    dspace = device_space(tiny_space)
    from hwnas.devices.lut import count_table, macs_table, sum_parts

    archs = dspace.reference_archs()
    macs = sum_parts(dspace, macs_table(count_table(tiny_space)), np.stack([dspace.parse_arch(a) for a in archs]))
    rows = [[a, f"{2.0 + m / 1e5:.6g}", f"{0.5 + m / 1e6:.6g}"] for a, m in zip(archs, macs)]
    path = write_csv(tmp_path / "s.csv", ["arch", "latency_ms", "energy_mJ"], rows)
    registry.add_device("handmade", tiny_space, path)
    model = cost_model("handmade", tiny_space)
    assert model.method.startswith("MAC count")
    assert model.labels == {"latency_ms": "fitted", "energy_mJ": "fitted", "power_W": "derived"}
    assert model.loo_spearman()["latency_ms"] == pytest.approx(1.0)
    out = model.predict_archs(archs)
    np.testing.assert_allclose(out["latency_ms"], [float(r[1]) for r in rows], rtol=1e-4)


def test_covering_configs_run_every_choice_of_every_slot_at_every_resolution(tiny_space):
    from hwnas.devices.lut import CONTEXT_ROUNDS, covering_configs

    net = device_space(tiny_space).supernet
    kw = net.init_kwargs
    choices = [(k, e) for k in kw["kernel_sizes"] for e in kw["expand_ratios"]]
    configs = covering_configs(net)
    assert len(configs) == CONTEXT_ROUNDS * len(kw["resolutions"]) * len(choices)
    assert all(c[f"d{i}"] == kw["max_depth"] for c in configs for i in range(net.num_stages))
    for r in kw["resolutions"]:
        at_r = [c for c in configs if c["r"] == r]
        for b in range(len(net.blocks)):
            runs = sorted((c[f"ks{b}"], c[f"e{b}"]) for c in at_r)
            assert runs == sorted(choices * CONTEXT_ROUNDS)  # each choice, in CONTEXT_ROUNDS neighbourhoods
    # across rounds a slot meets other neighbours: the (slot 0, slot 1) pairs differ between rounds
    half = len(configs) // CONTEXT_ROUNDS
    pairs = [{(c["ks0"], c["e0"], c["ks1"], c["e1"]) for c in configs[j * half:(j + 1) * half]}
             for j in range(CONTEXT_ROUNDS)]
    assert pairs[0] != pairs[1]


def test_segment_timer_splits_a_run_where_the_boundaries_run():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    ticks = iter(range(100))
    timer = backends.SegmentTimer(lambda: model(torch.zeros(1, 8)), [model[1], model[2]], lambda: next(ticks))
    start = next(ticks)
    timer()
    assert timer.segments(start, next(ticks)) == [1, 1, 1]  # call -> ReLU -> Linear -> return
    timer.close()
    stray = torch.nn.Linear(8, 8)  # never runs inside the model
    timer = backends.SegmentTimer(lambda: model(torch.zeros(1, 8)), [stray], lambda: 0.0)
    timer()
    with pytest.raises(HwnasError, match="0 of 1 boundaries ran"):
        timer.segments(0.0, 1.0)


def test_table_timing_methods_give_the_same_entries(tiny_space):
    from hwnas.devices.lut import ALONE, IN_CONTEXT, measure_table, sum_parts

    dspace = device_space(tiny_space)
    runner = backends.create_backend("torch-cpu", batch_size=2, threads=1, **FAST)
    alone = measure_table(dspace, runner, method=ALONE)
    context = measure_table(dspace, runner, method=IN_CONTEXT)
    assert set(alone) == set(context) == {key for key, _, _ in lut_parts(dspace)}
    assert all(e["latency_ms"] > 0 for e in [*alone.values(), *context.values()])
    assert alone[next(iter(alone))]["macs"] == context[next(iter(context))]["macs"]  # same counts either way
    genomes = dspace.space.sample(np.random.default_rng(0), 5)
    assert (sum_parts(dspace, {k: e["latency_ms"] for k, e in context.items()}, genomes) > 0).all()
    with pytest.raises(HwnasError, match="unknown table timing"):
        measure_table(dspace, runner, method="guess")
    with pytest.raises(HwnasError, match="needs a backend that times inside a model"):
        measure_table(dspace, backends.create_backend("onnxruntime-cpu", batch_size=2, threads=1), method=IN_CONTEXT)


def test_measure_rejects_tabular_space_and_unknown_backend(capsys):
    assert main(["devices", "measure", "x", "--space", "nb201"]) == 2
    assert "supernet space" in capsys.readouterr().err
    assert main(["devices", "measure", "x", "--space", "elastic_mbv3", "--backend", "tpu"]) == 2
    assert "unknown backend 'tpu'" in capsys.readouterr().err


# --------------------------------------------------------------------------- energy
def test_energy_estimate_uses_horowitz_figures():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    counts = energy.count_model(conv, (3, 8, 8), batch_size=2)
    assert counts.macs == 2 * 8 * 8 * 8 * 3 * 9
    assert counts.weight_values == 8 * 3 * 9 + 8
    assert counts.activation_values == 2 * (3 * 64 + 8 * 64)
    moved = counts.weight_values + counts.activation_values
    assert energy.energy_mJ(counts, "fp32") == pytest.approx((counts.macs * 4.6 + moved * 4 * 160) * 1e-9)
    assert energy.energy_mJ(counts, "int8") == pytest.approx((counts.macs * 0.23 + moved * 160) * 1e-9)
    out = energy.estimate_model(conv, (3, 8, 8), latency_ms=2.0)
    assert out["label"] == "estimated" and out["power_W"] == pytest.approx(out["energy_mJ"] / 2.0)
    with pytest.raises(HwnasError, match="allowed: fp32"):
        energy.energy_mJ(counts, "fp8")


# --------------------------------------------------------------------------- backends
def small_model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


def test_time_runs_stopping_rule():
    calls = []
    m = backends.time_runs(lambda: calls.append(1), warmup=2, repeats=5, max_repeats=40, rel_ci=math.inf,
                           per_round=3)
    assert m.repeats == 5 and len(calls) == 2 + (1 + 3) + (1 + 2)  # warm-up, rounds of 3 and 2: stable at once
    calls.clear()
    m = backends.time_runs(lambda: calls.append(1), warmup=0, repeats=5, max_repeats=12, rel_ci=0.0, per_round=3)
    assert m.repeats == 12 and len(calls) == 5 + 12  # never stable: rounds of 3, 2, then 3, 3, 1 up to the cap
    assert m.latency_ms > 0 and m.iqr_ms >= 0 and m.noise >= 0


def test_statistic_min_and_median():
    now, durations = [0.0], iter([0.0, 0.008, 0.002, 0.004, 0.006])  # the re-warm run, then four timed
    run = lambda: now.__setitem__(0, now[0] + next(durations))  # noqa: E731  (a clock that runs only in runs)
    m = backends.time_runs(run, warmup=0, repeats=4, max_repeats=4, per_round=4, statistic="min",
                           clock=lambda: now[0])
    assert m.repeats == 4 and m.latency_ms == pytest.approx(2.0) and m.median_ms == pytest.approx(5.0)
    with pytest.raises(HwnasError, match="unknown statistic"):
        backends.create_backend("torch-cpu", statistic="mean")


def test_segments_add_up_to_the_whole():
    """Segment timing inside a model: one value per boundary + 1, summing to the run's time."""
    heavy = lambda: torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(3)])  # noqa: E731
    model = torch.nn.Sequential(torch.nn.Identity(), heavy(), torch.nn.Linear(4, 4).eval(), heavy()).eval()
    model[2] = torch.nn.Identity()
    backend = backends.create_backend("torch-cpu", batch_size=2, clock="cpu", **FAST)
    (m,) = backend.measure_many([(model, (16, 24, 24), [model[1], model[3]])])
    stem, first, second = m.segments_ms
    assert first > 5 * stem and second > 5 * stem  # the convolutions sit in segments 1 and 2
    assert abs(sum(m.segments_ms) - m.latency_ms) < 0.25 * m.latency_ms
    assert not model[1]._forward_pre_hooks  # hooks removed after measuring
    with pytest.raises(HwnasError, match="boundaries ran"):
        backend.measure_many([(model, (16, 24, 24), [torch.nn.Linear(2, 2)])])


def test_measure_many_keeps_item_order():
    light = torch.nn.Linear(4, 4)
    heavy = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)])
    backend = backends.create_backend("torch-cpu", batch_size=2, clock="cpu", **FAST)
    m_light, m_heavy, m_light2 = backend.measure_many([(light, (4,)), (heavy, (16, 32, 32)), (light, (4,))])
    assert m_heavy.latency_ms > 20 * max(m_light.latency_ms, m_light2.latency_ms)  # ~1000x more work
    with pytest.raises(HwnasError, match="needs threads=1"):
        backends.create_backend("torch-cpu", threads=2, clock="cpu")


@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_cpu_backend(channels_last):
    m = backends.create_backend("torch-cpu", batch_size=2, channels_last=channels_last, **FAST).measure(
        small_model(), (3, 16, 16))
    assert m.latency_ms > 0 and m.repeats == 3
    assert (m.energy_mJ is not None) == backends.rapl_available()


def test_onnxruntime_backend_runs_the_same_function():
    model = small_model()
    backend = backends.create_backend("onnxruntime-cpu", batch_size=3, threads=1, **FAST)
    session, feeds = backend.session(model, (3, 16, 16))
    (onnx_out,) = session.run(None, feeds)
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, model(torch.from_numpy(feeds["input"])).numpy(), rtol=1e-4, atol=1e-5)
    m = backend.measure(model, (3, 16, 16))
    assert m.latency_ms > 0 and m.repeats == 3


def test_torch_cuda_backend_or_clear_skip():
    try:
        backend = backends.create_backend("torch-cuda", batch_size=2, **FAST)
    except HwnasError as err:
        assert "skipped: no CUDA device" in str(err)
        pytest.skip(str(err))
    m = backend.measure(small_model(), (3, 16, 16))  # pragma: no cover - needs a GPU
    assert m.latency_ms > 0


@pytest.mark.skipif(not backends.rapl_available(), reason="RAPL energy counters not readable on this machine")
def test_rapl_energy_is_positive():  # pragma: no cover - needs powercap access
    m = backends.create_backend("torch-cpu", batch_size=2, **FAST).measure(small_model(), (3, 16, 16))
    assert m.energy_source == "rapl" and m.energy_mJ > 0 and m.power_W > 0


# --------------------------------------------------------------------------- OFA supernet <- ofa_mbv3 table
def test_ofa_supernet_served_by_the_tables_few_shot_model():
    """ofa_mbv3_w1 sub-networks and the ofa_mbv3 table share arch keys: a shipped OFA device predicts both alike."""
    model = cost_model("v100_32", "ofa_mbv3_w1")
    assert "few-shot" in model.method and model.labels["latency_ms"] == "fitted"
    sup, tab = device_space("ofa_mbv3_w1"), device_space("ofa_mbv3")
    genomes = sup.space.sample(np.random.default_rng(0), 30)
    keys = [sup.format_arch(g) for g in genomes]
    direct = cost_model("v100_32", "ofa_mbv3").predict(np.stack([tab.parse_arch(k) for k in keys]))
    for metric, values in model.predict(genomes).items():
        np.testing.assert_allclose(values, direct[metric])
    assert np.ptp(direct["latency_ms"]) > 0  # the sub-networks differ


@requires(BENCH / "ofa.csv.gz")
def test_ofa_supernet_predictions_rank_the_tables_measurements():
    from scipy.stats import spearmanr

    from hwnas.tabular import TabularBenchmark

    bench = TabularBenchmark.load("ofa_mbv3")
    rows = np.random.default_rng(1).choice(len(bench), 300, replace=False)
    sup = device_space("ofa_mbv3_w1")
    genomes = np.stack([sup.parse_arch(bench.arch_ids[i]) for i in rows])
    predicted = cost_model("v100_32", "ofa_mbv3_w1").predict(genomes)["latency_ms"]
    assert spearmanr(predicted, bench.values("v100_32")[rows])[0] > 0.8


def test_run_reanchors_a_table_measured_on_this_machine(measured_home, tiny_space, tmp_path, monkeypatch, capsys):
    """A run predicting latency from a table measured here re-times the references once and scales by them."""
    import yaml

    from hwnas.store import ResultsStore

    root, _ = measured_home
    monkeypatch.setenv("HWNAS_HOME", str(root.parent))
    supernet, _, checkpoint = tiny_space.partition(":")

    def run(name, **device):
        cfg = {"name": name, "space": {"supernet": supernet, "checkpoint": checkpoint},
               "devices": [{"name": "tinycpu", "warmup": 1, **device}],
               "objectives": {"latency_ms": {"goal": "min", "source": "predicted"}, "params": "min"},
               "strategy": {"name": "random", "population": 8, "generations": 1, "seed": 0}, "measure_front": False}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        code = main(["run", str(path), "--out", str(tmp_path / name), "--quiet"])
        return code, tmp_path / name

    model = cost_model("tinycpu", tiny_space, root)
    code, out = run("anchored")
    assert code == 0
    store = ResultsStore(out / "results.sqlite")
    scale = store.get_meta("latency_scale@tinycpu")
    assert 0.2 < scale < 5  # the same machine, moments apart
    cands = store.candidates()
    predicted = np.array([c.predicted["latency_ms"] for c in cands])
    np.testing.assert_allclose(predicted, scale * model.predict(np.array([c.genome for c in cands]))["latency_ms"])
    assert f"re-anchored: tinycpu's reference sub-networks timed at the start of the run took {scale:.3f} x" \
        in (out / "report.md").read_text()
    # a resume takes the stored factor: nothing is timed again, the predictions stay the same
    from hwnas.devices import measure
    from hwnas.pipeline import Experiment, load_run_config

    monkeypatch.setattr(measure, "reference_drift", lambda *a: pytest.fail("references timed again on resume"))
    exp = Experiment(load_run_config(out), out)
    try:
        assert exp._device_cost_model(next(m for m in exp.metrics if m.metric == "latency_ms")).latency_scale == scale
    finally:
        exp.close()
    monkeypatch.undo()
    monkeypatch.setenv("HWNAS_HOME", str(root.parent))

    code, out = run("as-measured", reanchor=False)
    store = ResultsStore(out / "results.sqlite")
    assert code == 0 and store.get_meta("latency_scale@tinycpu") is None
    cands = store.candidates()
    np.testing.assert_allclose([c.predicted["latency_ms"] for c in cands],
                               model.predict(np.array([c.genome for c in cands]))["latency_ms"])


@requires(BENCH / "nb201.csv.gz")
def test_reanchor_needs_a_profile_measured_here(tmp_path, capsys):
    """reanchor: true on a device whose samples were given (not timed here): one line, exit 2, nothing run."""
    import yaml

    cfg = {"name": "x", "space": {"table": str(BENCH / "nb201.csv.gz"), "tabular_space": "nb201"},
           "data": "cifar10", "devices": [{"name": "pixel3", "backend": "table", "reanchor": True}],
           "objectives": {"accuracy": "max", "latency_ms": {"goal": "min", "source": "predicted"}}}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "devices[0].reanchor" in err and "allowed: auto, false" in err
    assert not (tmp_path / "run").exists()
