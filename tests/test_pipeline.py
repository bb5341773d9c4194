"""End to end: YAML -> search -> store -> front -> report, on a real (small) supernet and a real table."""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BENCH, FMNIST, requires
from hwnas.cli import main

SMALL = dict(stem_width=8, stage_widths=(8, 16), stage_strides=(1, 2), stage_se=(False, True), head_width=32)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A small elastic MobileNetV3 (random weights: these tests check the pipeline, not accuracy)."""
    import torch
    from hwnas import supernets

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    supernets.save_checkpoint(supernets.create("elastic_mbv3", **SMALL), path, {"note": "random init for tests"})
    return path


def experiment(tmp_path, checkpoint, **changes):
    data = {
        "name": "small",
        "space": {"supernet": "elastic_mbv3", "checkpoint": str(checkpoint)},
        "data": "fmnist-mini",
        "devices": [{"name": "local-cpu", "batch_size": 4, "warmup": 1, "repeats": 3}],
        "objectives": {"accuracy": {"goal": "max", "source": "predicted"}, "latency_ms": "min"},
        "budgets": ["latency_ms <= 1000"],
        "strategy": {"population": 6, "generations": 2, "seed": 0, "initial_samples": 8},
        "accuracy_eval": {"calib_images": 64, "images": 256},
    }
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_supernet_run_writes_the_run_folder(tmp_path, small_checkpoint):
    out = tmp_path / "run"
    assert main(["run", str(experiment(tmp_path, small_checkpoint)), "--out", str(out), "--quiet"]) == 0
    for name in ("config.yaml", "results.sqlite", "candidates.csv", "front.csv", "report.md", "pareto.png", "hv.png"):
        assert (out / name).is_file(), name
    front = read_csv(out / "front.csv")
    assert front, "empty front"
    for row in front:  # every front value measured, every budget met
        assert row["accuracy_source"] == "measured" and row["latency_ms_source"] == "measured"
        assert float(row["latency_ms"]) <= 1000 and 0 <= float(row["accuracy"]) <= 1
        assert row["arch"].startswith("ks=")
    # The front is non-dominated among the measured candidates.
    cands = [r for r in read_csv(out / "candidates.csv") if r["accuracy_source"] == "measured"]
    for f in front:
        fa, fl = float(f["accuracy"]), float(f["latency_ms"])
        assert not any(float(c["accuracy"]) >= fa and float(c["latency_ms"]) < fl
                       or float(c["accuracy"]) > fa and float(c["latency_ms"]) <= fl for c in cands)
    db = sqlite3.connect(out / "results.sqlite")
    gens = {g for (g,) in db.execute("SELECT DISTINCT generation FROM candidates")}
    assert gens <= {0, 1, 2} and 0 in gens  # initial samples, then the two generations
    report = (out / "report.md").read_text()
    assert "## Pareto front" in report and "Hypervolume per generation" in report


def test_existing_run_folder_is_not_overwritten(tmp_path, small_checkpoint):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.sqlite").write_text("precious")
    assert main(["run", str(experiment(tmp_path, small_checkpoint)), "--out", str(out), "--quiet"]) == 2
    assert (out / "results.sqlite").read_text() == "precious"


def _stored(db_path):
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT candidate_id, name, source, value, created_at FROM objectives ORDER BY 1, 2, 3").fetchall()
    finally:
        db.close()


def test_sigkill_then_resume_evaluates_nothing_twice(tmp_path, small_checkpoint):
    cfg = experiment(tmp_path, small_checkpoint, name="killed",
                     objectives={"accuracy": "max", "params": "min"}, budgets=[],
                     strategy={"population": 8, "generations": 4, "seed": 1})
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hwnas.cli", "run", str(cfg), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill once a dozen candidates are stored
        try:
            if (out / "results.sqlite").exists() and len(_stored(out / "results.sqlite")) >= 24:
                break
        except sqlite3.OperationalError:  # the store is being created
            pass
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _stored(out / "results.sqlite")
    assert not (out / "front.csv").exists()

    assert main(["resume", str(out), "--quiet"]) == 0
    after = _stored(out / "results.sqlite")
    assert set(before) <= set(after)  # every stored value kept as it was: nothing was redone
    keys = [(c, n, s) for c, n, s, _, _ in after]
    assert len(keys) == len(set(keys))  # each value evaluated once
    assert len(after) > len(before) and (out / "front.csv").exists()

    # The resumed run reaches the same candidates as one that was never killed.
    clean = tmp_path / "clean"
    assert main(["run", str(cfg), "--out", str(clean), "--quiet"]) == 0
    db_a, db_b = sqlite3.connect(out / "results.sqlite"), sqlite3.connect(clean / "results.sqlite")
    q = "SELECT key FROM candidates ORDER BY key"
    assert db_a.execute(q).fetchall() == db_b.execute(q).fetchall()


def test_ray_and_local_give_the_same_front(tmp_path, small_checkpoint, ray_cluster):
    fronts = {}
    for kind in ("local", "ray"):
        cfg = experiment(tmp_path, small_checkpoint, name=f"exec-{kind}",
                         objectives={"accuracy": "max", "params": "min"}, budgets=["params <= 100000"],
                         executor={"kind": kind, "workers": 2})
        out = tmp_path / kind
        assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
        fronts[kind] = [(r["arch"], r["accuracy"], r["params"]) for r in read_csv(out / "front.csv")]
    assert fronts["local"] and fronts["local"] == fronts["ray"]


@requires(BENCH / "nb201.csv.gz")
def test_tabular_run_finds_most_of_the_exhaustive_front(tmp_path):
    from hwnas.search import hv_ratio
    from hwnas.tabular import TabularBenchmark

    cfg = {
        "name": "nb201", "space": {"table": str(BENCH / "nb201.csv.gz"), "tabular_space": "nb201"},
        "data": "cifar10", "devices": [{"name": "pixel3", "backend": "table"}],
        "objectives": {"accuracy": "max", "latency_ms": "min"}, "budgets": ["latency_ms <= 6"],
        "strategy": {"population": 30, "generations": 20, "seed": 0},
    }
    path = tmp_path / "nb201.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    front = read_csv(tmp_path / "run" / "front.csv")
    bench = TabularBenchmark.load("nb201", BENCH / "nb201.csv.gz")
    acc, lat = bench.values("cifar10_acc") / 100, bench.values("pixel3")
    ok = lat <= 6
    F_true = np.stack([-acc[ok], lat[ok]], axis=1)
    F_found = np.array([[-float(r["accuracy"]), float(r["latency_ms"])] for r in front])
    assert hv_ratio(F_found, F_true) >= 0.9


@requires(BENCH / "nb201.csv.gz")
def test_predicted_latency_from_a_shipped_device_profile(tmp_path):
    """Latency predicted by the few-shot model adapted to pixel3's 10 reference samples; front re-measured."""
    cfg = {
        "name": "nb201-fewshot", "space": {"table": str(BENCH / "nb201.csv.gz"), "tabular_space": "nb201"},
        "data": "cifar10", "devices": [{"name": "pixel3", "backend": "table"}],
        "objectives": {"accuracy": "max", "latency_ms": {"goal": "min", "source": "predicted"}},
        "budgets": ["latency_ms <= 6"], "strategy": {"population": 20, "generations": 10, "seed": 0},
    }
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    db = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    n_pred = db.execute("SELECT COUNT(*) FROM objectives WHERE name='latency_ms' AND source='predicted'").fetchone()[0]
    n_cands = db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    assert n_pred == n_cands  # no initial measured samples were needed
    front = read_csv(tmp_path / "run" / "front.csv")
    assert len(front) >= 5 and all(r["latency_ms_source"] == "measured" and float(r["latency_ms"]) <= 6 for r in front)


def test_quickstart_at_reduced_size(tmp_path):
    """experiments/quickstart.yaml as shipped (the embedded default), only smaller."""
    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "experiments" / "quickstart.yaml").read_text())
    cfg["strategy"].update(evaluations=16)
    cfg["accuracy_eval"].update(images=500, calib_images=200)
    path = tmp_path / "quickstart-small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    front = read_csv(out / "front.csv")
    assert front and all(r["accuracy_source"] == "measured" and r["latency_ms_source"] == "measured" for r in front)
    assert all(0.5 < float(r["accuracy"]) <= 1 for r in front)  # the shipped supernet is trained
    # Accuracy and latency measured, energy counted from each candidate's layers: nothing needs an
    # initial design, so the run measures exactly its budget.
    cands = read_csv(out / "candidates.csv")
    assert len(cands) == 16 and all(int(r["generation"]) >= 1 for r in cands)
    assert {"prune.stage0", "quant.stem", "quant.head"} <= set(front[0])  # architecture x pruning x quantization


@requires(BENCH / "nb201.csv.gz")
def test_two_devices_each_with_its_own_budgets(tmp_path):
    """experiments/nb201_two_devices.yaml: every front member meets each device's budgets, values from its column."""
    from hwnas.tabular import TabularBenchmark

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "experiments" / "nb201_two_devices.yaml").read_text())
    cfg["space"]["table"] = str(BENCH / "nb201.csv.gz")
    cfg["strategy"].update(population=20, generations=5)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    front = read_csv(tmp_path / "run" / "front.csv")
    assert len(front) >= 3
    bench = TabularBenchmark.load("nb201", str(BENCH / "nb201.csv.gz"))
    for row in front:
        genome = bench.arch_to_genome(row["arch"])[None]
        for device, limit in (("pixel3", 12), ("gold_6240", 10)):
            value = float(row[f"latency_ms@{device}"])
            assert value <= limit and value == pytest.approx(float(bench.lookup(genome, device)[0]))
        assert float(row["energy_mJ@pixel3"]) <= 0.8 and row["energy_mJ@pixel3_source"] == "estimated"
    # a budget that binds on one device only: some candidates were kept off the front by gold_6240 alone
    cands = read_csv(tmp_path / "run" / "candidates.csv")
    assert any(float(c["latency_ms@gold_6240"]) > 10 and float(c["latency_ms@pixel3"]) <= 12 for c in cands)


@requires(FMNIST)
def test_fmnist_experiment_at_reduced_size(tmp_path):
    """experiments/fmnist_mbv3.yaml (the shipped Fashion-MNIST supernet, by name) searches, only smaller."""
    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "experiments" / "fmnist_mbv3.yaml").read_text())
    assert cfg["space"]["checkpoint"] == "fmnist_mbv3"
    cfg["data"] = f"fashion-mnist:{FMNIST}"
    cfg["strategy"].update(population=4, generations=1, initial_samples=6)
    cfg["accuracy_eval"].update(images=200, calib_images=100)
    path = tmp_path / "fmnist-small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    front = read_csv(tmp_path / "run" / "front.csv")
    assert front and all(r["accuracy_source"] == "measured" for r in front)
    assert max(float(r["accuracy"]) for r in front) > 0.85  # the full-data supernet, not the mini one


def nb201_experiment(tmp_path, name="nb201", **changes):
    cfg = {
        "name": name, "space": {"table": str(BENCH / "nb201.csv.gz"), "tabular_space": "nb201"},
        "data": "cifar10", "devices": [{"name": "pixel3", "backend": "table"}],
        "objectives": {"accuracy": "max", "latency_ms": "min"},
        "strategy": {"name": "linas", "evaluations": 60, "seed": 0},
    }
    cfg.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@requires(BENCH / "nb201.csv.gz")
@pytest.mark.parametrize("strategy", [{"name": "linas"}, {"name": "optuna", "sampler": "tpe"}, {"name": "nsga2"}])
def test_a_budget_of_evaluations_is_distinct_measured_candidates(tmp_path, strategy):
    from hwnas.tabular import Nb201Space

    path = nb201_experiment(tmp_path, strategy={**strategy, "evaluations": 60, "seed": 0})
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    cands = read_csv(tmp_path / "run" / "candidates.csv")
    assert len(cands) == 60 and len({c["arch"] for c in cands}) == 60
    front = read_csv(tmp_path / "run" / "front.csv")
    vectors = [(r["accuracy"], r["latency_ms"]) for r in front]
    assert len(vectors) == len(set(vectors)) >= 3  # ties appear once
    # degenerate cells (output not connected to the input) are excluded by default
    from hwnas.tabular import TabularBenchmark

    bench = TabularBenchmark.load("nb201", BENCH / "nb201.csv.gz")
    G = np.array([bench.arch_to_genome(c["arch"]) for c in cands])
    assert Nb201Space.live_edges(G).any(axis=1).all()
    hv = json.loads((tmp_path / "run" / "hv.json").read_text())
    assert all(0 <= h["hypervolume"] <= 1 and 0 <= h["hv_ratio_vs_exhaustive"] <= 1 for h in hv["history"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"{hv['history'][-1]['hypervolume']:.4f}" in report


@requires(BENCH / "nb201.csv.gz")
def test_a_budget_no_candidate_meets_ends_with_an_empty_valid_front(tmp_path, capsys):
    path = nb201_experiment(tmp_path, budgets=["latency_ms <= 0.0001"],
                            strategy={"name": "nsga2", "evaluations": 48, "seed": 0})
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "no evaluated candidate meets latency_ms <= 0.0001" in err
    lines = (tmp_path / "run" / "front.csv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("id,arch,")  # the header, no rows
    assert "the front is empty" in (tmp_path / "run" / "report.md").read_text()


@requires(BENCH / "nb201.csv.gz")
def test_missing_table_values_are_unknown_never_inf(tmp_path):
    """LatBench has no latency for the 341 disconnected NB201 cells: included, they stay unknown."""
    path = nb201_experiment(tmp_path, devices=[{"name": "eagle_desktop_cpu_i7_7820x_fp32", "backend": "table"}],
                            space={"table": str(BENCH / "nb201.csv.gz"), "tabular_space": "nb201",
                                   "degenerate": "include"},
                            strategy={"name": "random", "evaluations": 400, "seed": 1})
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    cands = read_csv(tmp_path / "run" / "candidates.csv")
    unknown = [c for c in cands if c["latency_ms_source"] == "unknown"]
    assert unknown and all(c["latency_ms"] == "" for c in unknown)
    assert not any(c["latency_ms"] in ("inf", "nan") for c in cands)
    front = read_csv(tmp_path / "run" / "front.csv")
    assert front and all(r["latency_ms_source"] == "measured" for r in front)


@requires(BENCH / "nb201.csv.gz")
def test_warm_start_takes_an_earlier_runs_store_for_free(tmp_path):
    first = nb201_experiment(tmp_path, name="first", strategy={"name": "random", "evaluations": 50, "seed": 3})
    assert main(["run", str(first), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    second = nb201_experiment(tmp_path, name="second",
                              strategy={"name": "linas", "evaluations": 30, "seed": 0, "warm_start": str(tmp_path / "a")})
    assert main(["run", str(second), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    cands = read_csv(tmp_path / "b" / "candidates.csv")
    warm = [c for c in cands if c["generation"] == "-2"]
    assert len(warm) == 50 and len(cands) == 80  # 30 new ones measured, the 50 never again
    bad = nb201_experiment(tmp_path, name="bad", strategy={"name": "linas", "warm_start": str(tmp_path / "nope")})
    assert main(["validate", str(bad)]) == 2


@requires(BENCH / "nb201.csv.gz")
def test_operators_and_sampler_come_from_the_yaml(tmp_path, capsys):
    good = nb201_experiment(tmp_path, name="ops", strategy={"name": "nsga2", "evaluations": 30,
                                                            "crossover": {"eta": 5, "prob": 0.8, "prob_var": 0.3},
                                                            "mutation": {"eta": 30}})
    assert main(["validate", str(good)]) == 0
    bad = nb201_experiment(tmp_path, name="bad-ops", strategy={"name": "nsga2", "crossover": {"eta": 0}})
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "strategy.crossover.eta" in err[0]
    bad = nb201_experiment(tmp_path, name="bad-sampler", strategy={"name": "optuna", "sampler": "cmaes"})
    assert main(["validate", str(bad)]) == 2
    assert "strategy.sampler" in capsys.readouterr().err


def test_measure_given_candidates_without_a_search(tmp_path, small_checkpoint):
    """hwnas.measure: the given compressed candidates (values spelled as front.csv spells them) are measured in
    full, none added; the same config measured by a search run gives the same accuracy; a bad value is one error."""
    import hwnas
    from hwnas.dimensions import JointSpace
    from hwnas.supernets import load_checkpoint

    space = {"supernet": "elastic_mbv3", "checkpoint": str(small_checkpoint),
             "dimensions": ["architecture", "pruning", "quantization"]}
    path = experiment(tmp_path, small_checkpoint, space=space, name="given")
    joint = JointSpace(load_checkpoint(small_checkpoint), space["dimensions"])
    rng = np.random.default_rng(3)
    configs = [joint.space.decode(joint.space.largest()), joint.space.decode(joint.space.smallest())]
    configs += [joint.space.decode(g) for g in joint.space.sample(rng, 2)]
    spelled = [{k: str(v) for k, v in c.items()} | {"accuracy": "ignored"} for c in configs]
    run = hwnas.measure(path, spelled, out=tmp_path / "given")
    rows = read_csv(tmp_path / "given" / "candidates.csv")
    assert len(rows) == 4
    assert all(r["accuracy_source"] == r["latency_ms_source"] == "measured" for r in rows)
    assert [{k: r[k] for k in configs[0]} for r in rows] == [{k: str(v) for k, v in c.items()} for c in configs]
    front = read_csv(tmp_path / "given" / "front.csv")
    assert 1 <= len(front) <= 4 and {r["id"] for r in front} <= {r["id"] for r in rows}
    assert "given candidates measured" in run.report()
    # The same largest config, measured as a search's initial sample (seeded accuracy subset): same accuracy.
    assert main(["run", str(path), "--out", str(tmp_path / "searched"), "--quiet"]) == 0
    searched = {r["arch"]: r for r in read_csv(tmp_path / "searched" / "candidates.csv") if r["generation"] == "0"}
    largest = rows[0]
    assert searched[largest["arch"]]["accuracy"] == largest["accuracy"]

    bad = dict(spelled[0], **{"prune.stage0": "0.3"})
    with pytest.raises(hwnas.HwnasError, match=r"candidates\[1\]: prune.stage0='0.3' is not allowed; allowed: "):
        hwnas.measure(path, [spelled[0], bad], out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing half-written
