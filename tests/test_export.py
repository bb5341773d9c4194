"""hwnas export / evaluate / hwnas.load on a real (tiny) run of the shipped supernet, CLI first."""

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml

from hwnas.cli import main

ALL_FORMATS = "onnx,onnx-int8,pt2,torchscript,state_dict"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real search of the shipped checkpoint at tiny size (accuracy measured on 200 val images).

    The checkpoint is a copy, so tests can change it and see the export refuse."""
    from hwnas.supernets import DEFAULT_CHECKPOINT

    root = tmp_path_factory.mktemp("export-run")
    checkpoint = root / "supernet.pt"
    shutil.copyfile(DEFAULT_CHECKPOINT, checkpoint)
    doc = {
        "name": "tiny",
        "space": {"supernet": "elastic_mbv3", "checkpoint": str(checkpoint)},
        "data": "fmnist-mini",
        "devices": [{"name": "local-cpu", "batch_size": 4, "warmup": 1, "repeats": 3}],
        "objectives": {"accuracy": {"goal": "max", "source": "measured"}, "latency_ms": "min"},
        "budgets": ["latency_ms <= 1000"],
        "strategy": {"population": 4, "generations": 1, "seed": 0},
        "accuracy_eval": {"calib_images": 64, "images": 200},
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(root / "tiny.yaml"), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """Rank 1 exported in every format, timed and evaluated on the test split (the CLI, once)."""
    out = tmp_path_factory.mktemp("export-out") / "rank1"
    assert main(["export", str(run_dir), "--rank", "1", "--format", ALL_FORMATS, "--out", str(out),
                 "--measure", "--evaluate", "--threads", "1"]) == 0
    return out


def front_rows(run_dir):
    import csv

    with open(run_dir / "front.csv") as f:
        return list(csv.DictReader(f))


def config_of(run_dir, cid):
    from hwnas.export import open_run

    return next(c.config for c in open_run(run_dir).candidates if c.id == int(cid))


def test_run_records_schema_version_and_checkpoint_sha256(run_dir):
    from hwnas.supernets import checkpoint_sha256

    db = sqlite3.connect(run_dir / "results.sqlite")
    meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    db.close()
    assert meta["schema_version"] == 1
    assert meta["checkpoint_sha256"] == checkpoint_sha256(run_dir.parent / "supernet.pt")


def test_export_writes_every_format_parity_checked(run_dir, exported):
    info = json.loads((exported / "model.json").read_text())
    best = max(front_rows(run_dir), key=lambda r: float(r["accuracy"]))
    assert info["candidate"]["id"] == int(best["id"]) and info["candidate"]["rank"] == 1
    assert info["candidate"]["arch"] == best["arch"]
    for fmt, name in [("onnx", "model.onnx"), ("onnx-int8", "model.int8.onnx"), ("pt2", "model.pt2"),
                      ("torchscript", "model.torchscript.pt"), ("state_dict", "model.state_dict.pt")]:
        assert (exported / name).is_file() and info["files"][fmt]["file"] == name
        assert info["files"][fmt]["bytes"] == (exported / name).stat().st_size
    parity = info["parity"]["formats"]
    assert info["parity"]["images"] == 2000
    for fmt in ("onnx", "pt2", "torchscript", "state_dict"):
        assert parity[fmt]["passed"] and parity[fmt]["max_abs_diff"] <= 1e-4
        assert parity[fmt]["top1_agreement"] >= 0.999
    # Whole-model int8 of an fp32 candidate: reported against the fp32 model, not required.
    assert not parity["onnx-int8"]["required"] and 0.9 < parity["onnx-int8"]["top1_agreement"] <= 1
    assert max(info["parity"]["between_files"].values()) <= 1e-4
    # Rebuilt exactly as searched: the run's accuracy reproduces on the run's own images.
    assert info["reproduced"]["accuracy"] == pytest.approx(float(best["accuracy"]), abs=1e-9)
    assert info["space"]["checkpoint_sha256_recorded_by_run"]
    assert info["preprocessing"]["mean"] == pytest.approx([0.2860]) and len(info["preprocessing"]["classes"]) == 10
    assert info["input"]["shape"] == [1, 28, 28]
    card = (exported / "model_card.md").read_text()
    assert "## Files and parity" in card and "model.pt2" in card and "| accuracy |" in card
    assert "warning" not in card  # sha256 recorded by this run


def test_measure_and_evaluate_go_into_the_card(exported):
    info = json.loads((exported / "model.json").read_text())
    timed = info["measured_at_export"]
    assert timed["device"] == "local-cpu" and timed["batch_size"] == 4
    assert set(timed["files"]) == set(info["files"]) and all(t["latency_ms"] > 0 for t in timed["files"].values())
    # The run's backend (onnxruntime) ran the fp32 graph: the file that is the searched model, beside its figure
    # (same batch, same unit: a per-image or per-batch mix-up would be 4x off; timing noise is not).
    assert timed["searched_format"] == "onnx"
    assert timed["run_latency_ms"] == pytest.approx(info["values"]["latency_ms"]["measured"])
    assert 0.25 < timed["ratio_to_run"] < 4
    test = info["test_accuracy"]
    assert test["images"] == 2000 and test["onnx"] == pytest.approx(test["torch"], abs=2e-3)
    card = (exported / "model_card.md").read_text()
    assert "## Measured at export" in card and "## Test accuracy" in card and "x that figure now" in card


def _run_isolated(code: str, cwd) -> subprocess.CompletedProcess:
    """``python -I`` (no PYTHONPATH, no user site, no cwd on the path) where importing hwnas fails."""
    prelude = "import sys\nsys.modules['hwnas'] = None\ntry:\n    import hwnas\n    raise SystemExit('hwnas importable')\n" \
              "except ImportError:\n    pass\n"
    return subprocess.run([sys.executable, "-I", "-c", prelude + textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_onnx_and_pt2_run_without_hwnas_and_agree(exported, tmp_path):
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32))
    np.save(tmp_path / "x.npy", x.numpy())
    onnx_only = f"""
        sys.modules['torch'] = None  # onnxruntime and numpy only
        import numpy as np, onnxruntime as ort
        x = np.load({str(tmp_path / 'x.npy')!r})
        y = ort.InferenceSession('model.onnx', providers=['CPUExecutionProvider']).run(None, {{'input': x}})[0]
        np.save({str(tmp_path / 'onnx.npy')!r}, y)
    """
    torch_only = f"""
        sys.modules['onnxruntime'] = None; sys.modules['timm'] = None  # torch only
        import numpy as np, torch
        x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))
        np.save({str(tmp_path / 'pt2.npy')!r}, torch.export.load('model.pt2').module()(x).detach().numpy())
    """
    for code in (onnx_only, torch_only):
        proc = _run_isolated(code, exported)
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = np.load(tmp_path / "onnx.npy"), np.load(tmp_path / "pt2.npy")
    assert a.shape == (64, 10) and np.abs(a - b).max() <= 1e-4
    import hwnas

    with torch.no_grad():
        assert np.abs(hwnas.load(exported)(x).numpy() - b).max() <= 1e-4


def test_hwnas_load_gives_a_trainable_module(exported, tmp_path):
    import hwnas
    from hwnas.errors import HwnasError

    model = hwnas.load(exported)
    assert isinstance(model, torch.nn.Module) and not model.training
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    state = torch.load(copy / "model.state_dict.pt", weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, copy / "model.state_dict.pt")
    with pytest.raises(HwnasError, match="sha256 differs"):
        hwnas.load(copy)


def test_evaluate_gives_the_test_accuracy_of_a_pick(run_dir, tmp_path, capsys):
    from hwnas import supernets

    row = min(front_rows(run_dir), key=lambda r: float(r["latency_ms"]))
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run_dir), "--pick", row["id"], "--split", "test", "--json", str(out)]) == 0
    assert f"candidate {row['id']}" in capsys.readouterr().out
    [result] = json.loads(out.read_text())
    net = supernets.load_checkpoint(run_dir.parent / "supernet.pt")
    data = supernets.load_dataset("fmnist-mini")
    expected = supernets.subnet_accuracy(net, config_of(run_dir, row["id"]), data, split="test", calib_images=64, seed=0)
    assert result["accuracy"] == pytest.approx(expected, abs=1e-9) and result["images"] == 2000
    assert result["run_accuracy"] == pytest.approx(float(row["accuracy"]))


def test_pick_by_architecture_string_and_rank_by_another_metric(run_dir):
    from hwnas.export import Rebuilder, open_run

    rows = front_rows(run_dir)
    fastest = min(rows, key=lambda r: float(r["latency_ms"]))
    rb = Rebuilder(open_run(run_dir))
    [by_arch] = rb.choose(pick=fastest["arch"])
    assert by_arch.candidate.id == int(fastest["id"])
    [by_latency] = rb.choose(rank=1, by="latency_ms")
    assert by_latency.candidate.id == int(fastest["id"]) and by_latency.rank_by == "latency_ms"
    ranked = [c.candidate.id for c in rb.choose(front=True)]  # best accuracy first
    assert ranked == [int(r["id"]) for r in sorted(rows, key=lambda r: (-float(r["accuracy"]), float(r["latency_ms"])))]


def test_supernet_eval_takes_architecture_strings(run_dir, tmp_path, capsys):
    row = front_rows(run_dir)[0]
    out = tmp_path / "e.json"
    assert main(["supernet", "eval", str(run_dir.parent / "supernet.pt"), "--configs", f"smallest,{row['arch']}",
                 "--split", "val", "--calib-images", "64", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["configs"]
    assert results[1]["arch"] == row["arch"] and results[1]["config"] == config_of(run_dir, row["id"])
    assert main(["supernet", "eval", "default", "--configs", "ks=7;e=6;d=4;r=28"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ks=7;e=6;d=4;r=28" in err


def test_front_exports_one_folder_per_member(run_dir, tmp_path):
    out = tmp_path / "front"
    assert main(["export", str(run_dir), "--front", "--format", "onnx", "--out", str(out), "--parity-images", "200"]) == 0
    ids = sorted(int(r["id"]) for r in front_rows(run_dir))
    assert sorted(int(p.name.split("-")[1]) for p in out.iterdir()) == ids
    for p in out.iterdir():
        info = json.loads((p / "model.json").read_text())
        assert info["parity"]["formats"]["onnx"]["passed"] and (p / "model_card.md").is_file()


# --------------------------------------------------------------------------- bad input
def _copy_run(run_dir, tmp_path):
    copy = tmp_path / "run-copy"
    shutil.copytree(run_dir, copy)
    return copy


def _other_version(run_dir, tmp_path):
    copy = _copy_run(run_dir, tmp_path)
    db = sqlite3.connect(copy / "results.sqlite")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    return copy


def _changed_checkpoint(run_dir, tmp_path):
    """The run as it would look had its checkpoint file changed since it started: the sha256 it stored differs."""
    copy = _copy_run(run_dir, tmp_path)
    db = sqlite3.connect(copy / "results.sqlite")
    db.execute("UPDATE meta SET value = ? WHERE key = 'checkpoint_sha256'", (json.dumps("0" * 64),))
    db.commit()
    db.close()
    return copy


def _table_run(run_dir, tmp_path):
    from hwnas.store import ResultsStore

    folder = tmp_path / "table-run"
    folder.mkdir()
    (tmp_path / "table.csv").write_text("arch\n")
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "name": "t", "space": {"table": str(tmp_path / "table.csv"), "tabular_space": "nb201"}, "data": "cifar10",
        "devices": [{"name": "pixel3", "backend": "table"}], "objectives": {"accuracy": "max", "latency_ms": "min"}}))
    ResultsStore(folder / "results.sqlite").close()
    return folder


BAD_INPUTS = [
    ("unknown pick", lambda r, t: r, ["--pick", "9999"], "no candidate 9999"),
    ("unknown arch", lambda r, t: r, ["--pick", "ks=333333333333;e=333333333333;d=222;r=20"], "neither a candidate"),
    ("rank too large", lambda r, t: r, ["--rank", "99"], "--rank 99"),
    ("rank zero", lambda r, t: r, ["--rank", "0"], "--rank 0"),
    ("unknown metric", lambda r, t: r, ["--rank", "1", "--by", "energy"], "--by energy"),
    ("unknown format", lambda r, t: r, ["--rank", "1", "--format", "onnx,tflite"], "'tflite'"),
    ("other format version", _other_version, ["--rank", "1"], "schema version 2"),
    ("changed checkpoint", _changed_checkpoint, ["--rank", "1"], "sha256"),
    ("table run", _table_run, ["--pick", "1"], "no weights"),
    ("name escapes", lambda r, t: r, ["--rank", "1", "--name", "../escaped"], "escapes the output folder"),
    ("unknown device", lambda r, t: r, ["--rank", "1", "--measure", "--device", "nosuch"], "--device nosuch"),
    ("device without measure", lambda r, t: r, ["--rank", "1", "--device", "local-cpu"], "only used with --measure"),
]


@pytest.mark.parametrize("what,make_run,args,fragment", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys, what, make_run, args, fragment):
    run = make_run(run_dir, tmp_path)
    before = sorted(p.name for p in run.iterdir())
    out = tmp_path / "out"
    assert main(["export", str(run), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not out.exists() and not list(tmp_path.glob(".out*")) and not (tmp_path / "escaped.onnx").exists()
    assert sorted(p.name for p in run.iterdir()) == before


def test_missing_checkpoint_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys):
    checkpoint = run_dir.parent / "supernet.pt"
    away = checkpoint.with_name("supernet.pt.away")
    checkpoint.rename(away)
    try:
        assert main(["export", str(run_dir), "--rank", "1", "--out", str(tmp_path / "out")]) == 2
    finally:
        away.rename(checkpoint)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "space.checkpoint" in err and str(checkpoint) in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_output_folder_not_empty_needs_force_and_never_the_run(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), "--rank", "1", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert main(["export", str(run_dir), "--rank", "1", "--out", str(run_dir.parent), "--force"]) == 2
    assert "holds the run folder" in capsys.readouterr().err and (run_dir / "results.sqlite").is_file()
    assert main(["export", str(run_dir), "--rank", "1", "--out", str(out), "--force", "--parity-images", "200"]) == 0
    assert (out / "model.onnx").is_file() and not (out / "keep.txt").exists()


def test_failed_parity_fails_the_export_and_keeps_the_old_folder(run_dir, tmp_path, capsys, monkeypatch):
    import hwnas.export

    monkeypatch.setattr(hwnas.export, "FP32_MAX_ABS_DIFF", 0.0)  # onnxruntime's fp32 differs by ~1e-5: fails
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(run_dir), "--rank", "1", "--format", "onnx", "--out", str(out), "--force",
                 "--parity-images", "200"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "parity check failed" in err and "onnx" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and not list(tmp_path.glob(".out*"))


def test_resume_refuses_a_changed_checkpoint(run_dir, tmp_path, capsys):
    run = _changed_checkpoint(run_dir, tmp_path)
    before = (run / "results.sqlite").read_bytes()
    assert main(["resume", str(run), "--generations", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sha256" in err
    assert (run / "results.sqlite").read_bytes() == before  # not even its status changed
