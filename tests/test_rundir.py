"""Run folders as a user meets them: locked while in use, reusable until a run really started, names
that stay inside runs/, a cluster that cannot be reached refused in bounded time, and a samples file
of any size added at bounded cost. Real processes, real files."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hwnas.cli import main
from test_catalogue import SMALL, checkpoint, nb201_table, snapshot, work  # noqa: F401 - fixtures and helpers shared


def table_config(work: Path, **changes) -> Path:
    data = {"name": "t", "space": {"table": str(nb201_table(work / "t.csv.gz", rows=200)), "tabular_space": "nb201"},
            "data": "cifar10", "devices": [{"name": "pixel3", "backend": "table"}],
            "objectives": {"accuracy": "max", "latency_ms": "min"}, "strategy": {"population": 6, "generations": 2}}
    data.update(changes)
    path = work / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _candidates(store: Path) -> int:
    if not store.exists():
        return 0
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_a_second_resume_of_a_folder_in_use_is_refused_in_one_line(work, capsys, checkpoint):
    """A real run holds the folder; 'hwnas resume' and 'hwnas run --out' of it are refused, naming its PID and
    host; once the run is killed its lock is stale and the resume proceeds."""
    cfg = {"name": "busy", "space": {"supernet": "elastic_mbv3", "checkpoint": str(checkpoint)},
           "objectives": {"accuracy": "max", "params": "min"}, "strategy": {"population": 8, "generations": 50},
           "accuracy_eval": {"calib_images": 16, "images": 64}}
    path = work / "busy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = work / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hwnas.cli", "run", str(path), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and _candidates(out / "results.sqlite") < 1:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the test"
        for argv in (["resume", out], ["run", path, "--out", out]):
            capsys.readouterr()
            assert main([str(a) for a in argv]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1
            # run --out: the folder already holds candidates, so it is refused before the lock is even tried
            assert f"pid {proc.pid} on {socket.gethostname()}" in err or "already holds a run" in err, err
        info = json.loads((out / "run.lock").read_text())
        assert info["pid"] == proc.pid and info["host"] == socket.gethostname()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The killed run's lock file stays behind, naming a dead process: stale, so taken over.
    assert json.loads((out / "run.lock").read_text())["pid"] == proc.pid
    from hwnas.rundir import RunLock

    lock = RunLock(out).acquire()
    assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (out / "run.lock").exists()


def test_a_run_killed_before_its_first_candidate_is_taken_by_run_again(work):
    path = table_config(work)
    out = work / "run"
    proc = subprocess.run([sys.executable, "-m", "hwnas.cli", "run", str(path), "--out", str(out), "--quiet"],
                          env={**os.environ, "HWNAS_KILL_AT": "store-created"}, capture_output=True)
    assert proc.returncode == -9 and (out / "results.sqlite").exists() and (out / "run.lock").exists()
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0  # not "already holds a run"
    assert (out / "front.csv").is_file() and not (out / "run.lock").exists()


def test_a_folder_of_a_failed_start_is_reused_with_another_file(work):
    """A folder whose run never stored a value holds nothing to lose: the corrected file may use it."""
    path = table_config(work)
    out = work / "run"
    subprocess.run([sys.executable, "-m", "hwnas.cli", "run", str(path), "--out", str(out), "--quiet"],
                   env={**os.environ, "HWNAS_KILL_AT": "config-written"}, capture_output=True)
    path = table_config(work, strategy={"population": 4, "generations": 1, "seed": 7})
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["strategy"]["seed"] == 7


def test_run_name_with_a_path_stays_inside_runs(work):
    path = table_config(work, name="../../escaped")
    assert main(["run", str(path), "--quiet"]) == 0
    runs = list((work / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("_.._escaped-")
    assert not any(p.name.startswith("escaped") for p in work.parent.parent.iterdir())


# (not "auto": on a shared machine it joins whatever Ray another user started here)
@pytest.mark.parametrize("address", ["127.0.0.1:9"])
def test_unreachable_ray_cluster_fails_in_bounded_time_leaving_no_folder(work, capsys, checkpoint, address):
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray of this test session is running (ray.init would join it)")
    cfg = {"name": "ray", "space": {"supernet": "elastic_mbv3", "checkpoint": str(checkpoint)},
           "objectives": {"accuracy": "max", "params": "min"}, "executor": {"kind": "ray", "address": address}}
    path = work / "ray.yaml"
    path.write_text(yaml.safe_dump(cfg))
    before = snapshot(work)
    for command in (["validate", str(path)], ["run", str(path), "--out", str(work / "run"), "--quiet"]):
        start = time.time()
        capsys.readouterr()
        assert main(command) == 2  # validate probes the cluster too: valid means it will run
        assert time.time() - start < 45
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "executor.address" in err and "executor.kind: local" in err, err
        assert snapshot(work) == before  # no folder: nothing to block a rerun


def test_devices_add_of_ten_thousand_samples_is_bounded(work, capsys):
    """Issue 21: a 10,000-row samples file once needed 126 GiB in the fit; the profile is written only
    after the (subsampled) predictor fitted, and predicting with it works."""
    from hwnas.devices.spaces import device_space
    from hwnas.tabular import _nb201_space

    space = _nb201_space()
    refs = device_space("nb201").reference_archs()
    rng = np.random.default_rng(0)
    others = [space.genome_to_arch(np.unravel_index(i, tuple(space.space.upper + 1)))
              for i in rng.choice(space.space.size, 12000, replace=False)]
    archs = list(dict.fromkeys(refs + others))[:10_000]
    macs = space.macs(np.stack([space.arch_to_genome(a) for a in archs]))
    lines = ["arch,latency_ms"] + [f"{a},{0.5 + m / 2e7:.4f}" for a, m in zip(archs, macs)]
    (work / "big.csv").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["devices", "add", "big", "--space", "nb201", "--samples", str(work / "big.csv")]) == 0
    out = capsys.readouterr().out
    assert "added 10000 samples" in out and "subset of 30" in out
    (work / "a.csv").write_text("arch\n" + "\n".join(refs) + "\n")
    assert main(["devices", "predict", "big", "--space", "nb201", "--archs", str(work / "a.csv"),
                 "--out", str(work / "p.csv")]) == 0
    assert (work / "p.csv").read_text().count("\n") == 11
