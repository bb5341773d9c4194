"""A catalogue of malformed inputs, each refused the same way (issue 21): exit code 2, one line on
stderr naming the file (or option) and the field, no traceback or warning, and the file tree exactly
as it was (a snapshot of the test's folder, device home and run folders included, before and after).

Experiment files go through both ``hwnas validate`` and ``hwnas run``: one gate, so both refuse alike
and ``run`` creates no folder. Everything is real: real tables (gzip), real torch checkpoints, real
SQLite stores, real IDX folders; small, so the catalogue runs in seconds.
"""

import gzip
import json
import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hwnas.cli import main

SMALL = dict(stem_width=8, stage_widths=(8, 16), stage_strides=(1, 2), stage_se=(False, True), head_width=32)


# --- the tree snapshot and the refusal check -------------------------------------------------------
def snapshot(root: Path):
    """Every file and folder under ``root`` with its size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = Path(dirpath) / name
            st = path.stat()
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns, hash(path.read_bytes()))
    return out


@pytest.fixture
def work(tmp_path, monkeypatch):
    """The test's folder as the current directory and the device home, so all a command could write is here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    return tmp_path


def assert_refused(work: Path, capsys, argv, *fragments):
    before = snapshot(work)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}; stderr: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"not one line: {err!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in err and "Warning" not in err, err
    for fragment in fragments:
        assert str(fragment) in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert snapshot(work) == before, "the file tree changed"
    return lines[0]


# --- real inputs to break ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from hwnas import supernets

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    supernets.save_checkpoint(supernets.create("elastic_mbv3", **SMALL), path)
    return path


def nb201_table(path: Path, rows: int = 40, columns=("cifar10_acc", "pixel3_latency_ms"), gz=True):
    from hwnas.tabular import _nb201_space

    space = _nb201_space()
    rng = np.random.default_rng(0)
    lines = ["arch_idx,arch_str," + ",".join(columns)]
    for i, flat in enumerate(rng.choice(space.space.size, rows, replace=False)):
        genome = np.unravel_index(flat, tuple(space.space.upper + 1))
        lines.append(f"{i},{space.genome_to_arch(genome)}," + ",".join(f"{rng.uniform(1, 90):.3f}" for _ in columns))
    text = "\n".join(lines) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def fbnet_table(path: Path, rows: int = 20):
    from hwnas.tabular import _fbnet_space

    space = _fbnet_space()
    rng = np.random.default_rng(0)
    lines = ["arch_idx,arch_key,gold_6240_latency_ms"]
    for i in range(rows):
        genome = rng.integers(0, space.space.upper + 1)
        lines.append(f"{i},{space.genome_to_arch(genome)},{rng.uniform(1, 9):.3f}")
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def table_experiment(work: Path, **changes):
    table = nb201_table(work / "t.csv.gz")
    data = {"name": "t", "space": {"table": str(table), "tabular_space": "nb201"}, "data": "cifar10",
            "devices": [{"name": "pixel3", "backend": "table"}],
            "objectives": {"accuracy": "max", "latency_ms": "min"}, "strategy": {"population": 4, "generations": 1}}
    data.update(changes)
    return data


def supernet_experiment(checkpoint, **changes):
    data = {"name": "s", "space": {"supernet": "elastic_mbv3", "checkpoint": str(checkpoint)},
            "objectives": {"accuracy": "max", "params": "min"}, "strategy": {"population": 4, "generations": 1}}
    data.update(changes)
    return data


def write_yaml(work: Path, data, name="exp.yaml") -> Path:
    path = work / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def torch_file(path: Path, obj) -> Path:
    import torch

    torch.save(obj, path)
    return path


def checkpoint_dict(**changes):
    from hwnas import supernets

    import torch

    torch.manual_seed(0)
    ckpt = supernets.checkpoint_dict(supernets.create("elastic_mbv3", **SMALL))
    ckpt.update(changes)
    return ckpt


def idx_file(path: Path, shape, truncate=0):
    raw = bytes([0, 0, 8, len(shape)]) + b"".join(int(s).to_bytes(4, "big") for s in shape)
    raw += bytes(int(np.prod(shape)) - truncate)
    path.write_bytes(raw)
    return path


# --- experiment files: (id, make(work, checkpoint) -> (yaml data or text, fragments)) -------------
def _deep(depth):
    return "a:\n" + "".join("  " * i + " b:\n" for i in range(1, depth)) + "  " * depth + " c: 1\n"


EXPERIMENTS = [
    ("duplicate-key", lambda w, c: ("name: a\nname: b\nspace: {supernet: elastic_mbv3}\n", ["duplicate key 'name'"])),
    ("duplicate-nested-key", lambda w, c: (yaml.safe_dump(supernet_experiment(c)) +
                                           "strategy: {population: 4, population: 6}\n", ["duplicate key"])),
    ("deep-nesting", lambda w, c: (_deep(60), ["nested deeper than 32"])),
    ("oversized", lambda w, c: ("# " + "x" * (1 << 20) + "\n", ["at most 1048576"])),
    ("not-utf8", lambda w, c: (b"name: \xff\xfe\n".decode("latin-1"), [])),
    ("not-a-mapping", lambda w, c: ("- a\n- b\n", ["YAML mapping"])),
    ("broken-yaml", lambda w, c: ("name: [unclosed\n", ["not valid YAML"])),
    ("empty-file", lambda w, c: ("", ["YAML mapping"])),
    ("unknown-key", lambda w, c: (supernet_experiment(c, bogus=1), ["bogus", "unknown key"])),
    ("devices-empty", lambda w, c: (supernet_experiment(c, devices=[]), ["devices", "at least one device"])),
    ("device-name-path", lambda w, c: (supernet_experiment(c, devices=[{"name": "../x"}]), ["devices.0.name"])),
    ("name-too-long", lambda w, c: (supernet_experiment(c, name="n" * 300), ["name", "at most 100"])),
    ("colliding-metric-keys", lambda w, c: (supernet_experiment(
        c, objectives={"accuracy": "max", "latency_ms": "min", "latency_ms@local-cpu": "min"}),
        ["objectives.latency_ms@local-cpu", "same metric as objectives.latency_ms"])),
    ("one-objective", lambda w, c: (supernet_experiment(c, objectives={"accuracy": "max"}), ["objectives"])),
    ("budget-unknown-metric", lambda w, c: (supernet_experiment(c, budgets=["speed <= 3"]), ["budgets[0]", "speed"])),
    ("budget-syntax", lambda w, c: (supernet_experiment(c, budgets=["params < 3"]), ["budgets[0]", "metric <= number"])),
    ("population-negative", lambda w, c: (supernet_experiment(c, strategy={"population": -3}),
                                          ["strategy.population", ">= 2"])),
    ("strategy-unknown", lambda w, c: (supernet_experiment(c, strategy={"name": "cmaes"}), ["strategy.name"])),
    ("address-without-ray", lambda w, c: (supernet_experiment(c, executor={"address": "auto"}), ["executor"])),
    ("energy-measured", lambda w, c: (supernet_experiment(c, objectives={"accuracy": "max", "energy_mJ": "min"}),
                                      ["objectives.energy_mJ", "source: predicted"])),
    # (energy_mJ without a profile is counted from each sub-network's layers; power needs the profile's latency model)
    ("power-without-profile", lambda w, c: (supernet_experiment(
        c, devices=[{"name": "mydev"}], objectives={"accuracy": "max", "power_W": {"goal": "min", "source": "predicted"}}),
        ["objectives.power_W", "'mydev' has none", "hwnas devices measure mydev"])),
    ("power-budget-without-profile", lambda w, c: (supernet_experiment(c, devices=[{"name": "mydev"}],
                                                                       budgets=["power_W <= 2"]),
                                                   ["budgets[0]", "power_W", "'mydev' has none"])),
    ("reanchor-without-profile", lambda w, c: (supernet_experiment(c, devices=[{"name": "mydev", "reanchor": True}]),
                                               ["devices[0].reanchor"])),
    ("table-missing", lambda w, c: (table_experiment(w, space={"table": "nope.csv.gz", "tabular_space": "nb201"}),
                                    ["space.table", "nope.csv.gz"])),
    ("table-truncated-gzip", lambda w, c: (table_experiment(w, space={"table": str(_truncate(nb201_table(
        w / "cut.csv.gz", rows=400))), "tabular_space": "nb201"}), ["space.table", "cut.csv.gz"])),
    ("table-header-only", lambda w, c: (table_experiment(w, space={"table": str(nb201_table(
        w / "head.csv.gz", rows=0)), "tabular_space": "nb201"}), ["space.table", "head.csv.gz", "no rows"])),
    ("table-not-gzip", lambda w, c: (table_experiment(w, space={"table": str(_text(w / "junk.csv.gz", "junk")),
                                                                "tabular_space": "nb201"}), ["space.table", "junk.csv.gz"])),
    ("table-empty-file", lambda w, c: (table_experiment(w, space={"table": str(_text(w / "empty.csv", "")),
                                                                  "tabular_space": "nb201"}), ["space.table", "empty"])),
    ("table-no-arch-column", lambda w, c: (table_experiment(w, space={"table": str(_text(
        w / "noarch.csv", "arch_idx,cifar10_acc\n0,50\n")), "tabular_space": "nb201"}), ["space.table", "arch_str"])),
    ("table-bad-arch", lambda w, c: (table_experiment(w, space={"table": str(_text(
        w / "badarch.csv", "arch_idx,arch_str,cifar10_acc\n0,|what~0|,50\n")), "tabular_space": "nb201"}),
        ["space.table", "badarch.csv"])),
    ("table-ragged-rows", lambda w, c: (table_experiment(w, space={"table": str(_text(
        w / "ragged.csv", "arch_idx,arch_str,cifar10_acc\n0,x\n")), "tabular_space": "nb201"}),
        ["space.table", "wrong number of fields"])),
    ("table-latency-not-numeric", lambda w, c: (table_experiment(w, space={"table": str(_text(
        w / "nan.csv", "arch_idx,arch_str,cifar10_acc,pixel3_latency_ms\n"
                       "0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,50,fast\n")), "tabular_space": "nb201"}),
        ["space.table", "pixel3_latency_ms", "row 2", "'fast'"])),
    ("table-device-unknown", lambda w, c: (table_experiment(w, devices=[{"name": "nosuchphone", "backend": "table"}]),
                                           ["devices[0].name", "'nosuchphone'", "neither a column"])),
    ("table-measured-profile-not-column", lambda w, c: (table_experiment(w, devices=[{"name": "gold_6240", "backend": "table"}]),
                                                         ["objectives.latency_ms", "source: predicted"])),
    ("table-no-accuracy-columns", lambda w, c: (table_experiment(w, space={"table": str(fbnet_table(w / "fb.csv.gz")),
                                                                           "tabular_space": "fbnet"},
                                                                 devices=[{"name": "gold_6240", "backend": "table"}],
                                                                 data="cifar100"),
                                                ["data", "fb.csv.gz", "no accuracy columns"])),
    ("table-accuracy-of-other-data", lambda w, c: (table_experiment(w, data="cifar100"),
                                                   ["data", "t.csv.gz", "cifar100_acc", "accuracy for cifar10"])),
    ("table-params", lambda w, c: (table_experiment(w, objectives={"accuracy": "max", "params": "min"}),
                                   ["objectives.params"])),
    ("checkpoint-missing", lambda w, c: (supernet_experiment(w / "none.pt"), ["space.checkpoint", "none.pt"])),
    ("checkpoint-garbage", lambda w, c: (supernet_experiment(_text(w / "junk.pt", "not a torch file")),
                                         ["space.checkpoint", "junk.pt", "corrupt"])),
    ("checkpoint-not-a-dict", lambda w, c: (supernet_experiment(torch_file(w / "list.pt", [1, 2])),
                                            ["space.checkpoint", "list.pt", "not a supernet checkpoint"])),
    ("checkpoint-kwargs-not-mapping", lambda w, c: (supernet_experiment(torch_file(
        w / "kw.pt", checkpoint_dict(kwargs=[1, 2]))), ["space.checkpoint", "kw.pt", "kwargs", "mapping"])),
    ("checkpoint-kwargs-unknown", lambda w, c: (supernet_experiment(torch_file(
        w / "kw2.pt", checkpoint_dict(kwargs={**SMALL, "wings": 2}))), ["space.checkpoint", "kw2.pt", "kwargs",
                                                                        "wings"])),
    ("checkpoint-kwargs-bad-value", lambda w, c: (supernet_experiment(torch_file(
        w / "kw3.pt", checkpoint_dict(kwargs={**SMALL, "stage_widths": "wide"}))), ["space.checkpoint", "kw3.pt",
                                                                                    "kwargs"])),
    ("checkpoint-wrong-shapes", lambda w, c: (supernet_experiment(torch_file(
        w / "shape.pt", checkpoint_dict(kwargs={**SMALL, "head_width": 64}))), ["space.checkpoint", "shape.pt",
                                                                               "do not fit"])),
    ("checkpoint-unknown-supernet", lambda w, c: (supernet_experiment(torch_file(
        w / "name.pt", checkpoint_dict(name="elastic_cnn"))), ["space.checkpoint", "name.pt", "elastic_cnn"])),
    ("checkpoint-other-supernet", lambda w, c: (supernet_experiment(c, space={"supernet": "elastic_resnet",
                                                                              "checkpoint": str(c)}),
                                                ["space.checkpoint", "'elastic_mbv3' supernet"])),
    ("checkpoint-pickled-code", lambda w, c: (supernet_experiment(torch_file(w / "code.pt", {"obj": Path("x")})),
                                              ["space.checkpoint", "code.pt"])),
    ("supernet-unknown", lambda w, c: (supernet_experiment(c, space={"supernet": "nasnet", "checkpoint": str(c)}),
                                       ["space.supernet", "nasnet"])),
    ("data-unknown", lambda w, c: (supernet_experiment(c, data="imagenet"), ["data", "imagenet"])),
    ("data-folder-missing", lambda w, c: (supernet_experiment(c, data="fashion-mnist:nowhere"), ["data", "nowhere"])),
    ("data-folder-empty", lambda w, c: (supernet_experiment(c, data=f"fashion-mnist:{_folder(w / 'empty')}"),
                                        ["data", "empty", "train-images-idx3-ubyte"])),
    ("data-idx-truncated", lambda w, c: (supernet_experiment(c, data=f"mnist:{_idx_folder(w / 'idx', truncate=5)}"),
                                         ["data", "train-images-idx3-ubyte"])),
    ("data-too-few-images", lambda w, c: (supernet_experiment(c, data=f"mnist:{_idx_folder(w / 'few', n=100)}"),
                                          ["data", "training images"])),
    ("output-is-a-file", lambda w, c: (supernet_experiment(c, output=str(_text(w / "out.txt", "x"))),
                                       ["output", "out.txt", "is a file"])),
    ("output-under-a-file", lambda w, c: (supernet_experiment(c, output=str(_text(w / "f.txt", "x")) + "/run"),
                                          ["output", "f.txt", "is a file"])),
    ("output-name-too-long", lambda w, c: (supernet_experiment(c, output="r" * 300), ["output", "bytes"])),
    ("output-holds-other-files", lambda w, c: (supernet_experiment(c, output=str(_folder(w / "busy", "notes.txt"))),
                                               ["busy", "other files"])),
    ("default-run-folder-under-a-file", lambda w, c: (_with_file(w / "runs", supernet_experiment(c)),
                                                      ["runs", "is a file"])),
]


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _truncate(path: Path) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _folder(path: Path, *files) -> Path:
    path.mkdir()
    for name in files:
        (path / name).write_text("mine")
    return path


def _idx_folder(path: Path, n: int = 10_100, truncate: int = 0) -> Path:
    path.mkdir()
    idx_file(path / "train-images-idx3-ubyte", (n, 28, 28), truncate)
    idx_file(path / "train-labels-idx1-ubyte", (n,))
    idx_file(path / "t10k-images-idx3-ubyte", (10, 28, 28))
    idx_file(path / "t10k-labels-idx1-ubyte", (10,))
    return path


def _with_file(path: Path, data):
    path.write_text("not a folder")
    return data


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", [c[1] for c in EXPERIMENTS], ids=[c[0] for c in EXPERIMENTS])
def test_bad_experiment_file(work, capsys, checkpoint, case, command):
    data, fragments = case(work, checkpoint)
    path = write_yaml(work, data)
    if isinstance(data, str) and data.startswith("name: \xff"):
        path.write_bytes(b"name: \xff\xfe\n")
    assert_refused(work, capsys, [command, path], str(path), *fragments)
    assert not (work / "runs").is_dir()


def test_not_utf8_named(work, capsys):
    path = work / "exp.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    assert_refused(work, capsys, ["validate", path], str(path), "not a UTF-8 text file")


# --- run options and run folders ------------------------------------------------------------------
def test_out_is_a_file(work, capsys, checkpoint):
    path = write_yaml(work, supernet_experiment(checkpoint))
    assert_refused(work, capsys, ["run", path, "--out", _text(work / "x", "")], "--out", "is a file")


def test_out_under_a_file(work, capsys, checkpoint):
    path = write_yaml(work, supernet_experiment(checkpoint))
    assert_refused(work, capsys, ["run", path, "--out", f"{_text(work / 'x', '')}/run"], "--out", "x is a file")


def test_out_name_too_long(work, capsys, checkpoint):
    path = write_yaml(work, supernet_experiment(checkpoint))
    assert_refused(work, capsys, ["run", path, "--out", "o" * 300], "--out", "bytes")


def test_validate_checks_out_too(work, capsys, checkpoint):
    path = write_yaml(work, supernet_experiment(checkpoint))
    assert_refused(work, capsys, ["validate", path, "--out", _text(work / "x", "")], "--out", "is a file")


def test_missing_experiment_file(work, capsys):
    assert_refused(work, capsys, ["run", work / "none.yaml"], "none.yaml", "no such file")


def test_experiment_path_is_a_folder(work, capsys):
    assert_refused(work, capsys, ["validate", _folder(work / "d")], "d", "not a regular file")


@pytest.fixture
def finished_run(work, checkpoint):
    """A real (tiny) finished run to break."""
    path = write_yaml(work, supernet_experiment(checkpoint, strategy={"population": 2, "generations": 1},
                                                accuracy_eval={"images": 64, "calib_images": 16}))
    assert main(["run", str(path), "--out", str(work / "run"), "--quiet"]) == 0
    return work / "run"


def test_resume_not_a_run_folder(work, capsys):
    assert_refused(work, capsys, ["resume", _folder(work / "r")], "r", "not a run folder")


def test_resume_garbage_store(work, capsys, finished_run):
    (finished_run / "results.sqlite").write_bytes(os.urandom(4096))
    for wal in ("results.sqlite-wal", "results.sqlite-shm"):
        (finished_run / wal).unlink(missing_ok=True)
    assert_refused(work, capsys, ["resume", finished_run], "results.sqlite", "not an SQLite results store")


def test_resume_empty_store(work, capsys, finished_run):
    (finished_run / "results.sqlite").write_bytes(b"")
    assert_refused(work, capsys, ["resume", finished_run], "results.sqlite", "empty file")


def test_resume_truncated_store(work, capsys, finished_run):
    db = sqlite3.connect(finished_run / "results.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    path = finished_run / "results.sqlite"
    raw = path.read_bytes()
    assert len(raw) >= 4 * 4096
    path.write_bytes(raw[: len(raw) // 2])
    assert_refused(work, capsys, ["resume", finished_run], "results.sqlite", "damaged")


def test_resume_store_of_newer_schema(work, capsys, finished_run):
    db = sqlite3.connect(finished_run / "results.sqlite")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    assert_refused(work, capsys, ["resume", finished_run], "results.sqlite", "schema version 99")


def test_resume_edited_config_names_the_changed_keys(work, capsys, finished_run):
    path = finished_run / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data["strategy"]["population"] = 3
    data["strategy"]["seed"] = 5
    path.write_text(yaml.safe_dump(data))
    line = assert_refused(work, capsys, ["resume", finished_run], path, "strategy.population", "strategy.seed",
                          "edited since the run started")
    assert "strategy.generations" not in line


def test_resume_invalid_edited_config(work, capsys, finished_run):
    path = finished_run / "config.yaml"
    path.write_text(path.read_text() + "bogus: 1\n")
    assert_refused(work, capsys, ["resume", finished_run], path, "bogus")


def test_run_into_a_finished_run(work, capsys, finished_run, checkpoint):
    path = write_yaml(work, supernet_experiment(checkpoint), name="other.yaml")
    assert_refused(work, capsys, ["run", path, "--out", finished_run], "already holds a run", "hwnas resume")


# --- samples CSVs (hwnas devices add) -------------------------------------------------------------
def _refs(work: Path) -> list:
    from hwnas.devices.spaces import device_space

    return device_space("nb201").reference_archs()


def _samples(work: Path, header="arch,latency_ms", rows=None, name="s.csv") -> Path:
    rows = rows if rows is not None else [f"{a},{1 + i}" for i, a in enumerate(_refs(work))]
    return _text(work / name, "\n".join([header] + rows) + "\n")


SAMPLES = [
    ("missing-file", lambda w: (w / "none.csv", ["none.csv", "does not exist"])),
    ("empty-file", lambda w: (_text(w / "e.csv", ""), ["e.csv", "empty file"])),
    ("missing-latency-column", lambda w: (_samples(w, "arch,speed"), ["s.csv", "missing column(s) latency_ms"])),
    ("unknown-column", lambda w: (_samples(w, "arch,latency_ms,colour", [f"{a},1,red" for a in _refs(w)]),
                                  ["s.csv", "unknown column(s) colour"])),
    ("latency-not-a-number", lambda w: (_samples(w, rows=[f"{a},fast" for a in _refs(w)]),
                                        ["s.csv", "row 2", "column latency_ms", "not a number"])),
    ("latency-negative", lambda w: (_samples(w, rows=[f"{a},-1" for a in _refs(w)]),
                                    ["s.csv", "row 2", "column latency_ms", "> 0"])),
    ("latency-infinite", lambda w: (_samples(w, rows=[f"{a},inf" for a in _refs(w)]),
                                    ["s.csv", "row 2", "column latency_ms"])),
    ("duplicate-arch", lambda w: (_samples(w, rows=[f"{_refs(w)[0]},1"] * 6), ["s.csv", "row 3", "duplicate of row 2"])),
    ("unknown-arch", lambda w: (_samples(w, rows=[f"|conv9x9~0|,{i}" for i in range(1, 7)]),
                                ["s.csv", "row 2", "column arch"])),
    ("too-few-rows", lambda w: (_samples(w, rows=[f"{a},1" for a in _refs(w)[:2]]), ["s.csv", "at least 5"])),
    ("ragged-row", lambda w: (_samples(w, rows=[f"{a},1,2" for a in _refs(w)]), ["s.csv", "row 2", "fields"])),
]


@pytest.mark.parametrize("case", [c[1] for c in SAMPLES], ids=[c[0] for c in SAMPLES])
def test_bad_samples_file(work, capsys, case):
    path, fragments = case(work)
    assert_refused(work, capsys, ["devices", "add", "pixel9", "--space", "nb201", "--samples", path], *fragments)
    assert not (work / "home").exists() or not any((work / "home").rglob("device.yaml"))


def test_bad_device_name(work, capsys):
    assert_refused(work, capsys, ["devices", "add", "../escape", "--space", "nb201", "--samples", _samples(work)],
                   "'../escape'", "allowed: letters")


# --- command-line options -------------------------------------------------------------------------
def test_refs_out_in_missing_folder(work, capsys):
    assert_refused(work, capsys, ["devices", "refs", "--space", "nb201", "--out", "missing_dir/x.csv"],
                   "--out", "missing_dir", "does not exist")


def test_predict_out_in_missing_folder(work, capsys):
    archs = _text(work / "a.csv", "arch\n" + "\n".join(_refs(work)) + "\n")
    assert_refused(work, capsys, ["devices", "predict", "pixel3", "--space", "nb201", "--archs", archs,
                                  "--out", "missing_dir/x.csv"], "--out", "missing_dir")


def test_predict_out_is_a_folder(work, capsys):
    archs = _text(work / "a.csv", "arch\n" + "\n".join(_refs(work)) + "\n")
    assert_refused(work, capsys, ["devices", "predict", "pixel3", "--space", "nb201", "--archs", archs,
                                  "--out", _folder(work / "d")], "--out", "is a folder")


def test_predict_archs_missing(work, capsys):
    assert_refused(work, capsys, ["devices", "predict", "pixel3", "--space", "nb201", "--archs", "none.csv",
                                  "--out", "p.csv"], "none.csv")


def test_eval_json_in_missing_folder(work, capsys, checkpoint):
    assert_refused(work, capsys, ["supernet", "eval", checkpoint, "--configs", "smallest", "--json",
                                  "missing_dir/x.json"], "--json", "missing_dir")


@pytest.mark.parametrize("option, value", [("--threads", "0"), ("--threads", "-2"), ("--calib-images", "-5")])
def test_eval_bad_numbers(work, capsys, checkpoint, option, value):
    assert_refused(work, capsys, ["supernet", "eval", checkpoint, "--configs", "smallest", option, value],
                   option, value, "allowed")


def test_eval_foreign_pickle_prints_no_warning(work, capsys):
    path = torch_file(work / "code.pt", {"obj": Path("x")})
    assert_refused(work, capsys, ["supernet", "eval", path, "--configs", "smallest"], "code.pt")


def test_eval_checkpoint_kwargs_not_mapping(work, capsys):
    path = torch_file(work / "kw.pt", checkpoint_dict(kwargs="big"))
    assert_refused(work, capsys, ["supernet", "eval", path, "--configs", "smallest"], "kw.pt", "kwargs")


def test_catalogue_size():
    """Issue 21 asks for at least 60 malformed inputs."""
    n = len(EXPERIMENTS) + len(SAMPLES) + sum(1 for name in globals() if name.startswith("test_") and name not in {
        "test_bad_experiment_file", "test_bad_samples_file", "test_catalogue_size"}) + 2  # eval numbers: 3 cases
    assert n >= 60, n
