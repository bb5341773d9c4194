"""The Python API: docs/API.md's examples run as written, and its views equal the CLI's files."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_api_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "API.md").read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/API.md", "exec"), namespace)
    run_dir = tmp_path / "runs" / "api-example"
    assert (run_dir / "front.csv").is_file() and (run_dir / "report.md").is_file()


def test_load_run_candidates_equal_candidates_csv(tmp_path):
    pd = pytest.importorskip("pandas")
    import hwnas
    from hwnas.cli import main

    config = tmp_path / "e.yaml"
    config.write_text(
        "name: df\nspace: {supernet: elastic_mbv3}\n"
        "devices: [{name: local-cpu, batch_size: 4, warmup: 1, repeats: 3}]\n"
        "objectives: {accuracy: max, latency_ms: min, params: min}\n"
        "strategy: {name: random, population: 5, generations: 1, seed: 2}\n"
        "accuracy_eval: {calib_images: 32, images: 100}\n")
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    run = hwnas.load_run(tmp_path / "run")
    df = run.candidates()
    csv = pd.read_csv(tmp_path / "run" / "candidates.csv")
    assert list(df.columns) == list(csv.columns) and len(df) == len(csv) == 5
    pd.testing.assert_frame_equal(df.reset_index(drop=True), csv, check_dtype=False)
    variables = [v.name for v in hwnas.supernets.load_default().space.variables]
    assert set(variables) <= set(df.columns)  # one column per search variable
    assert run.front().shape[0] == pd.read_csv(tmp_path / "run" / "front.csv").shape[0]


def test_version_and_errors_are_public():
    import hwnas
    from hwnas.cli import main

    assert hwnas.__version__
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    with pytest.raises(hwnas.ConfigError, match="space"):
        hwnas.load_config({"name": "x", "objectives": {"accuracy": "max", "latency_ms": "min"}})


def test_help_lists_allowed_values_from_the_registries(capsys):
    from hwnas.cli import main
    from hwnas.devices.backends import BACKENDS
    from hwnas.devices.spaces import known_spaces
    from hwnas.supernets.datasets import KINDS

    for argv, names in ((["devices", "measure", "--help"], BACKENDS.names() + known_spaces()),
                        (["supernet", "eval", "--help"], list(KINDS))):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert all(name in text for name in names), (argv, names)


def test_examples_ship_in_the_package_and_copy_out(tmp_path, capsys):
    from hwnas.cli import main

    assert main(["examples"]) == 0
    assert "quickstart.yaml" in capsys.readouterr().out
    assert main(["examples", "--copy", str(tmp_path / "ex")]) == 0
    assert (tmp_path / "ex" / "quickstart.yaml").is_file()
    assert main(["validate", str(tmp_path / "ex" / "quickstart.yaml")]) == 0
    assert main(["examples", "--copy", str(tmp_path / "ex")]) == 2  # never overwrites


def test_progress_reaches_the_total_it_was_given(tmp_path):
    """Measuring a predicted front adds evaluations: the total grows with them, so the bar ends full."""
    from hwnas.api import execute
    from hwnas.config import load_config

    config = tmp_path / "e.yaml"
    config.write_text(
        "name: bar\nspace: {supernet: elastic_mbv3}\n"
        "devices: [{name: local-cpu, batch_size: 4, warmup: 1, repeats: 3}]\n"
        "objectives: {accuracy: {goal: max, source: predicted}, latency_ms: min}\n"
        "strategy: {name: random, population: 6, generations: 1, seed: 0, initial_samples: 6}\n"
        "accuracy_eval: {calib_images: 32, images: 100}\nmeasure_front: true\n")
    from hwnas.store import ResultsStore

    done, totals = [], []
    (tmp_path / "run").mkdir()
    execute(load_config(config), tmp_path / "run", progress=done.append, on_start=totals.append)
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    # the loop's candidates had accuracy predicted; those of them measured afterwards are the front's
    remeasured = sum(1 for c in store.candidates() if c.generation > 0 and "accuracy" in c.measured)
    store.close()
    assert totals[0] == 12 and remeasured > 0
    assert sum(done) == totals[-1] == 12 + remeasured
