"""Experiment YAML validation: valid files load; every bad file gets one clear line and exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hwnas.cli import main
from hwnas.config import load_config, parse_config
from hwnas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "name": "t",
    "space": {"supernet": "elastic_mbv3"},
    "objectives": {"accuracy": "max", "latency_ms": {"goal": "min", "source": "measured"}},
    "budgets": ["latency_ms <= 15"],
}


def write(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def with_change(path_keys, value):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    for k in path_keys[:-1]:
        node = node.setdefault(k, {})
    node[path_keys[-1]] = value
    return data


def test_quickstart_is_valid():
    cfg = load_config(ROOT / "experiments" / "quickstart.yaml")
    assert cfg.objectives["accuracy"].goal == "max"
    assert cfg.budgets[0].metric == "latency_ms" and cfg.budgets[0].op == "<="


def test_short_forms():
    cfg = parse_config({**BASE, "budgets": {"latency_ms": "<= 12", "params": 5e5}})
    assert [(b.metric, b.op, b.value) for b in cfg.budgets] == [("latency_ms", "<=", 12), ("params", "<=", 5e5)]
    assert cfg.objectives["accuracy"].source == "measured"


@pytest.mark.parametrize("change, key, fragment", [
    ((["space", "bogus"], 1), "space.bogus", "unknown key"),
    ((["strategy", "population"], 1), "strategy.population", ">= 2"),
    ((["strategy", "population"], "ten"), "strategy.population", "integer"),
    ((["strategy", "name"], "cmaes"), "strategy.name", "nsga2"),
    ((["objectives", "latncy_ms"], "min"), "objectives.latncy_ms", "allowed: accuracy"),
    ((["objectives", "latency_ms@phone"], "min"), "objectives.latency_ms@phone", "not in devices"),
    ((["budgets"], ["latency_ms < 3"]), "budgets[0]", "metric <= number"),
    ((["budgets"], ["latency_ms <= -1"]), "budgets[0]", "never hold"),
    ((["budgets"], ["accuracy >= 90"]), "budgets[0]", "fraction"),
    ((["executor", "kind"], "dask"), "executor.kind", "local"),
    ((["executor", "address"], "auto"), "executor", "only allowed with kind: ray"),
    ((["space", "dimensions"], ["pruning"]), "space", "must include 'architecture'"),
    ((["devices"], [{"name": "a"}, {"name": "a"}]), "devices", "twice"),
])
def test_bad_values_name_file_key_and_allowed(tmp_path, change, key, fragment):
    path = write(tmp_path, with_change(*change))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {key}"), msg
    assert fragment in msg, msg
    assert "\n" not in msg


def test_missing_required_key(tmp_path):
    data = dict(BASE)
    del data["objectives"]
    with pytest.raises(ConfigError, match="objectives: required key is missing"):
        load_config(write(tmp_path, data))


@pytest.mark.parametrize("text", ["name: [x\n", "- a\n- b\n", ""])
def test_not_yaml_or_not_a_mapping(tmp_path, text):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_exit_2_one_line_nothing_written(tmp_path, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, with_change(["strategy", "population"], 0))
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([sys.executable, "-m", "hwnas.cli", command, str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "strategy.population" in lines[0] and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_validate_ok(capsys):
    assert main(["validate", str(ROOT / "experiments" / "quickstart.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def _measured_profile(home, name, **settings):
    from hwnas.devices.registry import DeviceSpec, save_device

    import socket

    save_device(DeviceSpec(name=name, kind="cpu", backend="torch-cpu", host=socket.gethostname(), **settings), {}, home)


def test_device_settings_come_from_a_measured_profile(tmp_path, monkeypatch):
    """Unset device settings follow the profile (its predictions were timed that way); set ones win."""
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    _measured_profile(tmp_path / "home" / "devices", "box", batch_size=8, threads=1, clock="cpu", statistic="median")
    data = with_change(["devices"], [{"name": "box"}])
    data["objectives"]["latency_ms"]["device"] = "box"
    cfg = load_config(write(tmp_path, data))
    box = cfg.devices[0]
    assert (box.backend, box.batch_size, box.threads, box.clock, box.statistic) == ("torch-cpu", 8, 1, "cpu", "median")

    data["devices"] = [{"name": "box", "batch_size": 1, "clock": "wall"}]
    box = load_config(write(tmp_path, data)).devices[0]
    assert (box.batch_size, box.clock, box.statistic) == (1, "wall", "median")

    # A file setting that contradicts the inherited ones is named, with the profile's settings.
    data["devices"] = [{"name": "box", "threads": 2}]
    with pytest.raises(ConfigError, match=r"devices\[0\].*threads: 1.*'box'"):
        load_config(write(tmp_path, data))


def _given_samples(tmp_path, name, **settings):
    """A profile with ten latency samples of the default supernet's reference sub-networks."""
    from hwnas.devices.registry import add_device
    from hwnas.devices.spaces import device_space

    samples = tmp_path / f"{name}.csv"
    archs = device_space("elastic_mbv3").reference_archs()
    samples.write_text("arch,latency_ms\n" + "".join(f"{a},{3 + i}\n" for i, a in enumerate(archs)))
    add_device(name, "elastic_mbv3", samples, home=tmp_path / "home" / "devices", **settings)


def test_profiles_of_given_samples_leave_device_settings_alone(tmp_path, monkeypatch):

    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    _given_samples(tmp_path, "phone", backend="external", batch_size=4)
    data = with_change(["devices"], [{"name": "phone"}])
    data["objectives"]["latency_ms"] = {"goal": "min", "source": "predicted"}
    data["budgets"] = []
    assert load_config(write(tmp_path, data)).devices[0].batch_size == 1


def test_a_profile_measured_on_another_host_is_external(tmp_path, monkeypatch):
    """Its settings are not inherited (nothing is timed here), and it cannot be measured here."""
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "home"))
    _given_samples(tmp_path, "other", backend="torch-cpu", host="another-host", batch_size=8)
    data = with_change(["devices"], [{"name": "other"}])
    with pytest.raises(ConfigError, match=r"objectives.latency_ms: device 'other' is external .*another-host"):
        load_config(write(tmp_path, data))
    data["objectives"]["latency_ms"]["source"] = "predicted"
    data["budgets"] = []
    assert load_config(write(tmp_path, data)).devices[0].batch_size == 1
