"""Tabular device cost models as a user meets them: physically valid predictions, few or poor samples."""

import csv

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.devices import registry
from hwnas.devices.predictors import POSITIVE_KNEE, cost_model, soft_floor
from hwnas.devices.spaces import device_space
from hwnas.predictors.fewshot import artifact_path
from test_devices import write_csv  # noqa: E402 - the shared helper

TABULAR = ("nb201", "fbnet", "ofa_mbv3")
needs_artifacts = pytest.mark.skipif(not all(artifact_path(s).is_file() for s in TABULAR),
                                     reason="shipped few-shot predictors not built")


pytestmark = pytest.mark.usefixtures("home")  # an empty user device registry per test (conftest)


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


# --------------------------------------------------------------------------- few or poor samples (issue 17.6)
def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def macs_latency(space, archs, scale=0.05):
    """A plausible device: latency proportional to MACs plus a constant (ms)."""
    d = device_space(space)
    return 0.4 + scale * d.tspace.macs(np.stack([d.parse_arch(a) for a in archs])) / 1e6


@needs_artifacts
def test_refs_n_lists_the_references_then_uncertain_architectures(tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["devices", "refs", "--space", "nb201", "--n", "14", "--out", str(out)]) == 0
    assert "reduce the few-shot predictor's uncertainty" in capsys.readouterr().err
    archs = [r["arch"] for r in read_rows(out)]
    refs = device_space("nb201").reference_archs()
    assert archs[:10] == refs and len(set(archs)) == 14 and not set(archs[10:]) & set(refs)
    assert all(r["latency_ms"] == "" for r in read_rows(out))
    # The same every time (a template others can share), and not the first cells of a random draw.
    assert main(["devices", "refs", "--space", "nb201", "--n", "14", "--out", str(tmp_path / "again.csv")]) == 0
    assert [r["arch"] for r in read_rows(tmp_path / "again.csv")] == archs
    capsys.readouterr()
    # The picks are where the meta-training devices disagree most: larger prior variance than typical cells.
    from hwnas.predictors.fewshot import _condition, load_pretrained

    meta = load_pretrained("nb201")
    m = meta.members_[0]
    S = _condition(m["prior_cov"], meta.embed(meta.reference_genomes_)[0], 0.05)
    pool = meta.candidate_pool()
    var = lambda G: np.einsum("ij,jk,ik->i", meta.embed(G)[0], S, meta.embed(G)[0])  # noqa: E731
    picked = var(np.stack([device_space("nb201").parse_arch(a) for a in archs[10:11]]))
    assert picked[0] >= var(pool).max() * (1 - 1e-6)  # float32 embeddings: one row vs the pool's batch
    for bad in (["--n", "0"], ["--device", "nosuch", "--n", "3"]):
        assert main(["devices", "refs", "--space", "nb201", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:")


@needs_artifacts
def test_add_with_few_samples_says_so_and_the_follow_up_template_completes_them(tmp_path, capsys):
    refs = device_space("fbnet").reference_archs()[:5]
    five = write_csv(tmp_path / "five.csv", ["arch", "latency_ms"],
                     [[a, f"{v:.4f}"] for a, v in zip(refs, macs_latency("fbnet", refs))])
    assert main(["devices", "add", "board5", "--space", "fbnet", "--samples", str(five)]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "5 samples, 10 recommended: measure 5 more" in warnings[0]
    assert "hwnas devices refs --space fbnet --device board5 --n 5 --out more.csv" in warnings[0]
    assert "expected Spearman rho" in out
    # Do what the line says: the template holds the 5 samples, then 5 new architectures to measure.
    more = tmp_path / "more.csv"
    assert main(["devices", "refs", "--space", "fbnet", "--device", "board5", "--n", "5", "--out", str(more)]) == 0
    rows = read_rows(more)
    assert [r["arch"] for r in rows[:5]] == refs and all(r["latency_ms"] for r in rows[:5])
    new = [r["arch"] for r in rows[5:]]
    assert len(new) == 5 and all(r["latency_ms"] == "" for r in rows[5:]) and not set(new) & set(refs)
    filled = write_csv(more, ["arch", "latency_ms"], [[r["arch"], r["latency_ms"]] for r in rows[:5]]
                       + [[a, f"{v:.4f}"] for a, v in zip(new, macs_latency("fbnet", new))])
    assert main(["devices", "add", "board5", "--space", "fbnet", "--samples", str(filled), "--force"]) == 0
    out = capsys.readouterr().out
    assert "added 10 samples" in out and "warning:" not in out


@needs_artifacts
def test_add_with_a_poor_leave_one_out_rho_says_so(tmp_path, capsys):
    refs = device_space("nb201").reference_archs()
    values = np.random.default_rng(1).permutation(macs_latency("nb201", refs))  # latencies that fit no model
    path = write_csv(tmp_path / "noisy.csv", ["arch", "latency_ms"], [[a, f"{v:.4f}"] for a, v in zip(refs, values)])
    assert main(["devices", "add", "noisy", "--space", "nb201", "--samples", str(path)]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "is low (< 0.8)" in warnings[0]
    assert "hwnas devices refs --space nb201 --device noisy --n 10 --out more.csv" in warnings[0]


@needs_artifacts
def test_add_reports_the_expected_rho_and_whether_more_samples_pay(tmp_path, capsys):
    refs = device_space("nb201").reference_archs()
    path = write_csv(tmp_path / "s.csv", ["arch", "latency_ms"],
                     [[a, f"{v:.4f}"] for a, v in zip(refs, macs_latency("nb201", refs))])
    assert main(["devices", "add", "clean", "--space", "nb201", "--samples", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(li for li in out if li.startswith("expected Spearman rho"))
    now, more = (float(x) for x in __import__("re").findall(r": (0\.\d+|1\.000)", line)[:2])
    assert 0 < now <= 1 and more >= now - 1e-9
    assert ("would pay" in line) == (more - now >= 0.01)
    # How like a meta-training device the samples are, and what the adapted model leans on.
    line = next(li for li in out if li.startswith("the closest meta-training device explains"))
    r2 = float(line.split("explains ")[1].split()[0])
    assert 0 <= r2 <= 1 and "weighs" in line
    assert ("the samples decide" in line) == (r2 < 0.8)


# --------------------------------------------------------------------------- never worse than a proxy (issue 23.1)
@needs_artifacts
@pytest.mark.parametrize("space", TABULAR)
def test_shots_that_follow_macs_make_the_flops_proxy_take_over(space):
    """A device whose latency is MACs (an accelerator bound by arithmetic): the adapted model must rank
    like MACs, not like the meta-training devices."""
    from scipy.stats import spearmanr

    from hwnas.predictors.fewshot import load_pretrained

    meta = load_pretrained(space)
    tspace = meta.tspace
    G = tspace.space.sample(np.random.default_rng(5), 2000)
    shots = np.vstack([meta.reference_genomes_, tspace.space.sample(np.random.default_rng(6), 10)])
    adapted = meta.adapt(0.4 + 0.05 * tspace.macs(shots) / 1e6, shots)
    assert adapted.weights_.get("meta", 0.0) < 0.5
    assert sum(adapted.weights_.get(k, 0.0) for k in ("flops", "roofline")) > 0.5
    assert spearmanr(adapted.predict(G), tspace.macs(G))[0] > 0.99
    # A device like a meta-training one keeps the meta-learned model.
    first = meta.adapt(meta.embed(meta.reference_genomes_)[0] @ meta.members_[0]["heads"][0] * 3.0 + 10.0)
    assert first.weights_.get("meta", 0.0) + sum(w for k, w in first.weights_.items() if k.startswith("device:")) > 0.9


@needs_artifacts
@pytest.mark.parametrize("space, kind", [("nb201", "live_ops"), ("fbnet", "traffic")])
def test_shots_that_follow_operator_types_or_activation_traffic_make_those_proxies_take_over(space, kind):
    """Devices unlike the meta-training set (issue 23.2): a runtime that pays per operator by type and
    prunes dead edges (NB201; the desktop Eagle pair is like this), and a large-batch GPU bound by
    activation traffic plus kernel launches (FBNet). The adapted model must follow them."""
    from scipy.stats import spearmanr

    from hwnas.predictors.fewshot import load_pretrained

    meta = load_pretrained(space)
    t = meta.tspace
    G = t.space.sample(np.random.default_rng(5), 2000)
    if kind == "live_ops":
        def cost(g):
            return 1.0 + t.op_counts(g)[:, 4:] @ np.array([0.30, 0.55, 0.35, 0.60])  # skip, 1x1, 3x3, pool
    else:
        def cost(g):
            return 2.0 + 0.4 * t.counts(g)[:, 2] / 1e6 + 0.05 * t.layers(g)
    adapted = meta.adapt(cost(meta.reference_genomes_))
    taken = sum(w for k, w in adapted.weights_.items() if k.startswith(kind.split("_")[0]) or k.endswith(kind))
    assert taken > 0.5, adapted.weights_
    assert spearmanr(adapted.predict(G), cost(G))[0] > 0.97


@needs_artifacts
def test_add_with_energy_compares_the_adapted_model_with_the_analytical_estimate(tmp_path, capsys):
    """Energy samples are adapted like latency (meta-trained on latency); add compares it with the estimate."""
    refs = device_space("fbnet").reference_archs()
    latency = macs_latency("fbnet", refs)
    rows = [[a, f"{v:.4f}", f"{2.5 * v + 0.3:.4f}"] for a, v in zip(refs, latency)]
    path = write_csv(tmp_path / "e.csv", ["arch", "latency_ms", "energy_mJ"], rows)
    assert main(["devices", "add", "metered", "--space", "fbnet", "--samples", str(path)]) == 0
    line = next(li for li in capsys.readouterr().out.splitlines() if li.startswith("energy_mJ:"))
    assert "leave-one-out rho" in line and "analytical estimate" in line
    model = cost_model("metered", "fbnet")
    assert model.labels["energy_mJ"] == "fitted"
    # Energy that is MACs-proportional is ranked like MACs: the proxies serve energy as they serve latency.
    from scipy.stats import spearmanr

    G = device_space("fbnet").space.sample(np.random.default_rng(2), 500)
    assert spearmanr(model.predict(G)["energy_mJ"], device_space("fbnet").tspace.macs(G))[0] > 0.9


@needs_artifacts
@pytest.mark.parametrize("space", ["fbnet", "ofa_mbv3"])
def test_with_fifty_shots_a_per_block_type_cost_is_learned(space):
    """A device that pays its own price per block type (a cost the meta-training devices do not show):
    with 50 shots the adaptation weighs the meta-learned model with the per-block-type roofline beside it
    (issue 23: more shots when ten are not enough) and ranks like the device; with 10 it does not try."""
    from scipy.stats import spearmanr

    from hwnas.predictors.fewshot import load_pretrained

    meta = load_pretrained(space)
    t = meta.tspace
    price = np.random.default_rng(7).uniform(0.0, 1.0, t.typed_work(meta.reference_genomes_).shape[1])

    G = t.space.sample(np.random.default_rng(5), 2000)
    scale = t.typed_work(G).std(0) + 1e-9

    def cost(g):
        return 1.0 + (t.typed_work(g) / scale) @ price

    shots = np.vstack([meta.reference_genomes_, t.space.sample(np.random.default_rng(6), 40)])
    adapted = meta.adapt(cost(shots), shots)
    assert sum(w for k, w in adapted.weights_.items() if "typed" in k) > 0.5, adapted.weights_
    assert spearmanr(adapted.predict(G), cost(G))[0] > 0.95
    ten = meta.adapt(cost(meta.reference_genomes_))
    assert not any("typed" in k for k in ten.weights_)
