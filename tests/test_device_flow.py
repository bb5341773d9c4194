"""The second user flow as a user meets it: refs -> measure elsewhere -> devices add -> hwnas run.

A device added from samples is *external*: its costs are predicted by its profile and never
timed on this host; the run says so, and its front's latencies are what `hwnas devices
predict` gives for the same architectures.
"""

import csv
import gzip
import hashlib
import sqlite3

import numpy as np
import pytest
import yaml

from conftest import BENCH, requires
from hwnas.cli import main

NB201_TABLE = BENCH / "nb201.csv.gz"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def measured_rows(run_dir, metric):
    with sqlite3.connect(run_dir / "results.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM objectives WHERE name = ? AND source = 'measured'",
                          (metric,)).fetchone()[0]


def fill_refs(refs_csv, out_csv, latency_of):
    rows = read_csv(refs_csv)
    assert len(rows) == 10 and all(r["latency_ms"] == "" for r in rows)  # a template to fill in
    with open(out_csv, "w") as f:
        f.write("arch,latency_ms\n")
        for r in rows:
            f.write(f"{r['arch']},{latency_of(r['arch']):.4f}\n")


def predicted_by_cli(tmp_path, device, space, archs):
    archs_csv, out = tmp_path / "archs.csv", tmp_path / "predicted.csv"
    with open(archs_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch"])
        writer.writerows([a] for a in archs)
    assert main(["devices", "predict", device, "--space", space, "--archs", str(archs_csv), "--out", str(out)]) == 0
    return [float(r["latency_ms"]) for r in read_csv(out)]


def add_phone(tmp_path, space, latency_of, name="pixel7"):
    refs = tmp_path / f"refs-{space}.csv"
    assert main(["devices", "refs", "--space", space, "--out", str(refs)]) == 0
    samples = tmp_path / f"{name}-{space}.csv"
    fill_refs(refs, samples, latency_of)
    assert main(["devices", "add", name, "--space", space, "--samples", str(samples), "--hardware", "a phone"]) == 0


@pytest.fixture
def device_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# --------------------------------------------------------------------------- supernet space
def mbv3_phone_latency(arch):
    """A phone that is ~3x slower than its MAC count suggests for this CPU, plus a fixed overhead."""
    from hwnas.devices.spaces import device_space
    from hwnas.modelstats import count_flops

    dspace = device_space("elastic_mbv3")
    model = dspace.supernet.extract(dspace.space.decode(dspace.parse_arch(arch)))
    return 3.0 + 0.9 * count_flops(model, dspace.input_shape) / 1e6


def mbv3_experiment(tmp_path, **changes):
    data = {"name": "mbv3-pixel7", "space": {"supernet": "elastic_mbv3", "checkpoint": "default"},
            "devices": [{"name": "pixel7"}],
            "objectives": {"accuracy": {"goal": "max", "source": "predicted"},
                           "latency_ms": {"goal": "min", "source": "predicted"}},
            "budgets": ["latency_ms <= 12"],
            "strategy": {"population": 6, "generations": 2, "seed": 0, "initial_samples": 8},
            "accuracy_eval": {"calib_images": 64, "images": 200}}
    data.update(changes)
    return write_yaml(tmp_path / "mbv3-pixel7.yaml", data)


def test_supernet_search_on_an_added_device_never_times_it_here(tmp_path, device_home, capsys):
    add_phone(tmp_path, "elastic_mbv3", mbv3_phone_latency)
    run_dir = tmp_path / "run"
    assert main(["run", str(mbv3_experiment(tmp_path)), "--out", str(run_dir), "--quiet"]) == 0
    assert "predicted, not measured: latency_ms" in capsys.readouterr().out
    assert measured_rows(run_dir, "latency_ms") == 0  # nothing was timed on this host for pixel7
    assert measured_rows(run_dir, "accuracy") > 0  # accuracy is measured (initial samples, front)
    front = read_csv(run_dir / "front.csv")
    assert front and all(r["latency_ms_source"] == "predicted" and r["accuracy_source"] == "measured" for r in front)
    cli = predicted_by_cli(tmp_path, "pixel7", "elastic_mbv3", [r["arch"] for r in front])
    np.testing.assert_allclose([float(r["latency_ms"]) for r in front], cli, rtol=1e-5)
    assert all(3.0 < v <= 12 for v in cli)
    assert predicted_by_cli(tmp_path, "pixel7", "elastic_mbv3", [front[0]["arch"]]) == cli[:1]  # --out overwritten  # the phone's scale, within the budget
    report = (run_dir / "report.md").read_text()
    assert "pixel7 (external:" in report and "predicted, not measured: latency_ms" in report
    assert "every value measured" not in report


# --------------------------------------------------------------------------- NB201 table
@pytest.fixture(scope="module")
def nb201_rows():
    if not NB201_TABLE.exists():
        pytest.skip(f"{NB201_TABLE} is absent (shared data not beside the project)")
    with gzip.open(NB201_TABLE, "rt") as f:
        return {r["arch_str"]: r for r in csv.DictReader(f)}


def nb201_experiment(tmp_path, device="pixel7", **changes):
    data = {"name": "nb201-pixel7", "space": {"table": str(NB201_TABLE), "tabular_space": "nb201"},
            "data": "cifar10", "devices": [{"name": device}],
            "objectives": {"accuracy": "max", "latency_ms": {"goal": "min", "source": "predicted"}},
            "budgets": ["latency_ms <= 10"], "strategy": {"population": 20, "generations": 5, "seed": 0}}
    data.update(changes)
    return write_yaml(tmp_path / f"nb201-{device}.yaml", data)


@requires(NB201_TABLE)
@pytest.mark.parametrize("measure_front", [True, False])
def test_table_search_on_a_device_that_is_not_a_column(tmp_path, device_home, nb201_rows, measure_front):
    # A new phone: 0.6 x the Samsung A50's latencies (a real device's shape, not in the table as pixel7).
    add_phone(tmp_path, "nb201", lambda a: 0.6 * float(nb201_rows[a]["samsung_a50_latency_ms"]))
    run_dir = tmp_path / "run"
    path = nb201_experiment(tmp_path, measure_front=measure_front)
    assert main(["run", str(path), "--out", str(run_dir), "--quiet"]) == 0
    front = read_csv(run_dir / "front.csv")
    assert front and all(r["latency_ms_source"] == "predicted" for r in front)
    assert all(float(r["latency_ms"]) > 0 for r in read_csv(run_dir / "candidates.csv"))
    cli = predicted_by_cli(tmp_path, "pixel7", "nb201", [r["arch"] for r in front])
    np.testing.assert_allclose([float(r["latency_ms"]) for r in front], cli, rtol=1e-5)
    report = (run_dir / "report.md").read_text()
    assert "No comparison with the exhaustive front: the table has no column for pixel7" in report


# --------------------------------------------------------------------------- validation
@requires(NB201_TABLE)
@pytest.mark.parametrize("case, key", [
    ("measured_latency_of_external", "objectives.latency_ms"),
    ("backend_on_external", "devices[0].backend"),
    ("neither_column_nor_profile", "devices[0].name"),
    ("profile_without_the_space", "objectives.latency_ms"),
    ("power_without_profile", "objectives.power_W"),
])
def test_device_files_that_cannot_run_are_refused_before_anything_is_written(tmp_path, device_home, nb201_rows,
                                                                            capsys, case, key):
    add_phone(tmp_path, "nb201", lambda a: 0.6 * float(nb201_rows[a]["samsung_a50_latency_ms"]))
    if case == "measured_latency_of_external":
        path = nb201_experiment(tmp_path, objectives={"accuracy": "max", "latency_ms": "min"})
    elif case == "backend_on_external":
        path = mbv3_experiment(tmp_path, devices=[{"name": "pixel7", "backend": "torch-cpu"}])
    elif case == "neither_column_nor_profile":
        path = nb201_experiment(tmp_path, device="pixel9")
    elif case == "profile_without_the_space":  # pixel7 has nb201 samples only
        path = write_yaml(tmp_path / "fbnet.yaml", {
            "name": "fbnet", "space": {"table": str(BENCH / "fbnet.csv.gz"), "tabular_space": "fbnet"},
            "devices": [{"name": "pixel7"}], "objectives": {"flops": "min",
                                                            "latency_ms": {"goal": "min", "source": "predicted"}}})
    else:
        # energy_mJ needs no profile on a supernet space (counted from each candidate's layers); power does
        path = write_yaml(tmp_path / "power.yaml", {
            "name": "power", "space": {"supernet": "elastic_mbv3"}, "devices": [{"name": "local-cpu"}],
            "objectives": {"accuracy": "max", "power_W": {"goal": "min", "source": "predicted"}}})
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "run")]):
        capsys.readouterr()
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and key in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder left behind


# --------------------------------------------------------------------------- resume
def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@requires(NB201_TABLE)
def test_resume_of_a_finished_run_changes_nothing_and_continuing_matches_a_longer_run(tmp_path, capsys):
    # Predicted accuracy, measured (from the table) on the front at the end: the values the strategy saw
    # change after the run, which is what used to make a resume wander off.
    def exp(name, generations):
        return write_yaml(tmp_path / f"{name}.yaml", {
            "name": name, "space": {"table": str(NB201_TABLE), "tabular_space": "nb201"}, "data": "cifar10",
            "devices": [{"name": "gold_6240"}],
            "objectives": {"accuracy": {"goal": "max", "source": "predicted"}, "latency_ms": "min"},
            "strategy": {"population": 12, "generations": generations, "seed": 3, "initial_samples": 20}})

    short, long = tmp_path / "short", tmp_path / "long"
    assert main(["run", str(exp("short", 3)), "--out", str(short), "--quiet"]) == 0
    views = {name: digest(short / name) for name in ("candidates.csv", "front.csv", "report.md")}
    capsys.readouterr()
    assert main(["resume", str(short), "--quiet"]) == 0
    assert "the run is finished" in capsys.readouterr().out
    assert {name: digest(short / name) for name in views} == views
    assert main(["resume", str(short), "--generations", "2", "--quiet"]) == 2  # not more than it has

    assert main(["resume", str(short), "--generations", "6", "--quiet"]) == 0
    assert main(["run", str(exp("long", 6)), "--out", str(long), "--quiet"]) == 0
    # The strategy replays exactly what the longer run saw, so both proposed the same candidates. (Their
    # fronts may differ: the continued run also knows the accuracy its first front measured.)
    keys = lambda run: sorted(r["arch"] for r in read_csv(run / "candidates.csv"))  # noqa: E731
    assert keys(short) == keys(long)
    assert all(r["accuracy_source"] == "measured" for r in read_csv(short / "front.csv"))


# --------------------------------------------------------------------------- physical values
def test_a_calibration_line_that_crosses_zero_still_predicts_positive_latency(tmp_path, device_home):
    """Ten samples on a steep line (large negative intercept): the smallest sub-networks fall below it."""
    from hwnas.devices.predictors import cost_model
    from hwnas.devices.spaces import device_space

    dspace = device_space("elastic_mbv3")
    flops = {}

    def steep(arch):
        flops[arch] = mbv3_phone_latency(arch) - 3.0
        return max(0.5, 1.5 * flops[arch] - 8.0)

    add_phone(tmp_path, "elastic_mbv3", steep, name="steep")
    model = cost_model("steep", "elastic_mbv3")
    assert model.latency_fit[1] < 0  # the fitted line really goes below zero for small networks
    genomes = np.vstack([dspace.space.smallest()[None], dspace.space.sample(np.random.default_rng(0), 2000)])
    latency = model.predict(genomes)["latency_ms"]
    energy = model.predict(genomes)["energy_mJ"]
    assert np.isfinite(latency).all() and (latency > 0).all() and (energy > 0).all()
    intercept_free = model.latency_fit[0] * model._sum(model.table, genomes) + model.latency_fit[1]
    assert (intercept_free <= 0).any()  # without the floor some would have been non-physical
