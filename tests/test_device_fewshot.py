"""Tabular device cost models as a user meets them: physically valid predictions, few or poor samples."""

import csv

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.devices import registry
from hwnas.devices.predictors import POSITIVE_KNEE, cost_model, soft_floor
from hwnas.devices.spaces import device_space
from hwnas.predictors.fewshot import artifact_path

TABULAR = ("nb201", "fbnet", "ofa_mbv3")
needs_artifacts = pytest.mark.skipif(not all(artifact_path(s).is_file() for s in TABULAR),
                                     reason="shipped few-shot predictors not built")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "hwnas"))
    return tmp_path / "hwnas" / "devices"


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def sweep_genomes(space):
    """Every NB201 cell; 3000 random architectures of the larger spaces (plus the extremes)."""
    s = device_space(space).space
    if space == "nb201":
        return np.array(np.unravel_index(np.arange(s.size), tuple(s.upper + 1))).T
    return np.vstack([s.sample(np.random.default_rng(0), 3000), s.smallest()[None], s.largest()[None]])


def assert_physical(model, G):
    out = model.predict(G)
    assert (out["latency_ms"] > 0).all() and np.isfinite(out["latency_ms"]).all()
    assert (out["energy_mJ"] > 0).all() and np.isfinite(out["energy_mJ"]).all()
    assert (out["power_W"] > 0).all() and np.isfinite(out["power_W"]).all()
    return out


def test_soft_floor_is_positive_monotone_and_leaves_values_above_the_knee():
    v = np.array([-1e6, -1.54, 0.0, 0.4, 0.5, 0.7, 12.0])
    out = soft_floor(v, 0.5)
    assert (out > 0).all() and (np.diff(out) > 0).all()
    np.testing.assert_array_equal(out[-3:], v[-3:])
    # continuous with slope 1 at the knee
    assert abs(soft_floor(np.array([0.5 - 1e-6]), 0.5)[0] - (0.5 - 1e-6)) < 1e-11


@needs_artifacts
@pytest.mark.parametrize("space", TABULAR)
def test_every_shipped_profile_predicts_physical_costs(space):
    G = sweep_genomes(space)
    profiles = [p for p in registry.list_devices() if p.has_space(space)]
    assert len(profiles) >= 9
    for profile in profiles:
        model = cost_model(profile, space)
        raw = model.adapted["latency_ms"].predict(G)
        out = assert_physical(model, G)
        above = raw >= model.knees["latency_ms"]
        np.testing.assert_array_equal(out["latency_ms"][above], raw[above])  # the floor only acts below
        order = np.argsort(raw, kind="stable")
        assert (np.diff(out["latency_ms"][order]) >= 0).all()  # and never reorders


@needs_artifacts
def test_pixel3_nb201_through_the_cli_has_no_negative_latency(tmp_path, capsys):
    """The case of issue 17: `devices predict pixel3 --space nb201` over all cells gave 68 negatives."""
    dspace = device_space("nb201")
    G = sweep_genomes("nb201")
    archs = write_csv(tmp_path / "all.csv", ["arch"], [[dspace.format_arch(g)] for g in G])
    assert main(["devices", "predict", "pixel3", "--space", "nb201", "--archs", str(archs),
                 "--out", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert "softly floored" in out
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(G)
    for metric in ("latency_ms", "energy_mJ", "power_W"):
        values = np.array([float(r[metric]) for r in rows])
        assert (values > 0).all() and np.isfinite(values).all(), metric


@needs_artifacts
@pytest.mark.parametrize("space", TABULAR)
def test_an_added_profile_with_odd_samples_stays_physical(space, tmp_path):
    """Samples far from any meta-training device (latency falling with size, energy and power measured)
    push the linear model to extrapolate; every prediction must still be positive and finite."""
    dspace = device_space(space)
    refs = dspace.reference_archs()
    macs = dspace.tspace.macs(np.stack([dspace.parse_arch(a) for a in refs]))
    latency = 1.0 + 50.0 / (macs / macs.min())  # fastest on the biggest network: a model will go below 0
    rows = [[a, f"{lat:.4g}", f"{0.3 * lat:.4g}", f"{2.0 + i % 3:.4g}"] for i, (a, lat) in enumerate(zip(refs, latency))]
    path = write_csv(tmp_path / "odd.csv", ["arch", "latency_ms", "energy_mJ", "power_W"], rows)
    registry.add_device("odd", space, path)
    model = cost_model("odd", space)
    assert model.labels["energy_mJ"] == "fitted" and model.labels["power_W"] == "fitted"
    assert model.knees["latency_ms"] == pytest.approx(POSITIVE_KNEE * latency.min(), rel=1e-3)
    assert_physical(model, sweep_genomes(space))
