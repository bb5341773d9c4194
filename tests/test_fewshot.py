"""Few-shot cost predictor and baselines on the real multi-device latency tables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from hwnas.errors import HwnasError
from hwnas.predictors.cost import FlopsPredictor, LayerwisePredictor, NonMetaPredictor
from hwnas.predictors.fewshot import FewShotPredictor, artifact_path, help_split, load_pretrained
from hwnas.tabular import TabularBenchmark, default_data_dir

needs_data = pytest.mark.skipif(not (default_data_dir() / "nb201.csv.gz").is_file(), reason="../shared/data absent")

META_TRAIN = ["1080ti_1", "1080ti_256", "silver_4114", "samsung_a50", "pixel3"]
HELD_OUT = "titanx_256"


@pytest.fixture(scope="module")
def nb201():
    return TabularBenchmark.load("nb201")


@pytest.fixture(scope="module")
def small_predictor(nb201):
    """A deliberately small meta-training run (few devices, few epochs)."""
    return FewShotPredictor("nb201", hidden=64, embed_dim=16, epochs=150, seed=0, threads=1).meta_fit(
        nb201, META_TRAIN
    )


def query_rho(bench, predictor, device):
    values = bench.values(device)
    query = help_split(bench, device)[1]
    return spearmanr(predictor.predict(bench.genomes[query]), values[query])[0]


@needs_data
def test_help_split_follows_protocol(nb201):
    pool, query = help_split(nb201, "gold_6240")
    assert nb201.arch_idx[pool].max() < 900 and nb201.arch_idx[query].min() >= 900
    assert nb201.arch_idx[query].max() < 1900
    assert 700 <= len(pool) <= 730 and 790 <= len(query) <= 810  # 10th-90th percentile kept


@needs_data
def test_adapted_predictor_beats_baselines_on_held_out_device(nb201, small_predictor):
    refs = nb201.rows_of_arch_idx(nb201.reference_archs())
    values = nb201.values(HELD_OUT)
    adapted = small_predictor.adapt(values[refs])  # shots = HELP's 10 reference archs
    ours = query_rho(nb201, adapted, HELD_OUT)
    shots = (nb201.genomes[refs], values[refs])
    flops = query_rho(nb201, FlopsPredictor("nb201").fit(*shots), HELD_OUT)
    layerwise = query_rho(nb201, LayerwisePredictor("nb201").fit(*shots), HELD_OUT)
    non_meta = query_rho(nb201, NonMetaPredictor("nb201").fit(*shots), HELD_OUT)
    assert ours > 0.9
    assert ours > max(flops, layerwise, non_meta) + 0.1
    # Predictions come back in the units of the samples (ms), close to the truth.
    query = help_split(nb201, HELD_OUT)[1]
    pred = adapted.predict(nb201.genomes[query])
    assert np.median(np.abs(pred - values[query]) / values[query]) < 0.15


@needs_data
def test_fit_is_adapt_in_place_and_works_on_any_column(nb201, small_predictor, tmp_path):
    rows = nb201.rows_of_arch_idx(nb201.reference_archs())
    column = "gold_6240_latency_ms"  # a column name works like a device name
    copy = small_predictor.adapt(nb201.values(column)[rows], nb201.genomes[rows])
    assert not hasattr(small_predictor, "y_mean_")  # adapt leaves the meta-trained model alone
    again = FewShotPredictor.load(small_predictor.save(tmp_path / "meta.npz"))
    assert again.fit(nb201.genomes[rows], nb201.values(column)[rows]) is again
    np.testing.assert_allclose(again.predict(nb201.genomes[:500]), copy.predict(nb201.genomes[:500]), rtol=1e-5)
    with pytest.raises(HwnasError, match="not adapted"):
        small_predictor.predict(nb201.genomes[:3])
    with pytest.raises(HwnasError, match="3 genomes but 2 values"):
        small_predictor.adapt([1.0, 2.0], nb201.genomes[:3])
    with pytest.raises(HwnasError, match="not meta-trained"):
        FewShotPredictor("nb201").adapt(np.ones(10))


@needs_data
def test_save_load_gives_identical_predictions(nb201, small_predictor, tmp_path):
    refs = nb201.rows_of_arch_idx(nb201.reference_archs())
    adapted = small_predictor.adapt(nb201.values(HELD_OUT)[refs])
    loaded = FewShotPredictor.load(adapted.save(tmp_path / "adapted.npz"))
    np.testing.assert_array_equal(loaded.predict(nb201.genomes), adapted.predict(nb201.genomes))
    # A meta-trained (not adapted) file adapts to the same result.
    meta = FewShotPredictor.load(small_predictor.save(tmp_path / "meta.npz"))
    np.testing.assert_array_equal(
        meta.adapt(nb201.values(HELD_OUT)[refs]).predict(nb201.genomes[:100]), adapted.predict(nb201.genomes[:100])
    )
    with pytest.raises(HwnasError, match="not found"):
        FewShotPredictor.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(HwnasError, match="not a FewShotPredictor file"):
        FewShotPredictor.load(tmp_path / "junk.npz")


@needs_data
def test_ofa_predictor_keeps_the_table_resolutions(tmp_path):
    ofa = TabularBenchmark.load("ofa_mbv3")
    predictor = FewShotPredictor("ofa_mbv3", hidden=32, embed_dim=8, epochs=20, threads=1)
    predictor.meta_fit(ofa, ["2080ti_64", "titan_xp_64"], rows=np.arange(300))
    refs = ofa.rows_of_arch_idx(ofa.reference_archs())
    adapted = FewShotPredictor.load(predictor.save(tmp_path / "ofa.npz")).adapt(ofa.values("v100_64")[refs])
    assert adapted.tspace.resolutions == ofa.tspace.resolutions
    assert np.isfinite(adapted.predict(ofa.genomes[:50])).all()


@needs_data
def test_baselines_fit_and_rank(nb201):
    refs = nb201.rows_of_arch_idx(nb201.reference_archs())
    values = nb201.values("samsung_a50")
    unfitted = FlopsPredictor("nb201").predict(nb201.genomes[:5])
    np.testing.assert_allclose(unfitted, nb201.macs(nb201.genomes[:5]) / 1e6)
    for cls in (FlopsPredictor, LayerwisePredictor, NonMetaPredictor):
        model = cls("nb201").fit(nb201.genomes[refs], values[refs])
        assert query_rho(nb201, model, "samsung_a50") > 0.5  # MACs explain phone latency well
    with pytest.raises(HwnasError, match="at least 2"):
        LayerwisePredictor("nb201").fit(nb201.genomes[:2], [1.0, np.nan])


@needs_data
@pytest.mark.skipif(not artifact_path("nb201").is_file(), reason="no shipped artifact yet")
def test_pretrained_artifact_loads_and_adapts(nb201):
    predictor = load_pretrained("nb201")
    assert predictor.reference_genomes_.shape == (10, 6)
    refs = nb201.rows_of_arch_idx(nb201.reference_archs())
    adapted = predictor.adapt(nb201.values("titanx_1")[refs])
    assert query_rho(nb201, adapted, "titanx_1") > 0.9
    with pytest.raises(HwnasError, match="no pretrained"):
        load_pretrained("nb301")


# --- prediction speed-ups: exact, whatever the data (no ../shared needed) ----------------------
@pytest.mark.parametrize("space, shots", [("nb201", 10), ("fbnet", 10), ("ofa_mbv3", 10), ("fbnet", 50),
                                         ("ofa_mbv3", 50)])
def test_fast_predict_equals_the_plain_forward_pass(space, shots, one_torch_thread):
    if not artifact_path(space).is_file():
        pytest.skip("no shipped artifact")
    meta = load_pretrained(space)
    if shots == 10:
        adapted = meta.adapt(np.linspace(1.0, 3.0, 10))
    else:  # enough shots for the per-block-type roofline: a cost that follows it
        S = np.vstack([meta.reference_genomes_, meta.tspace.space.sample(np.random.default_rng(4), shots - 10)])
        work = meta.tspace.typed_work(S)
        adapted = meta.adapt(1.0 + work @ np.random.default_rng(2).uniform(0, 1, work.shape[1]), S)
        assert adapted.members_[0]["proxy"][-work.shape[1]:].any(), adapted.weights_
    G = adapted.tspace.space.sample(np.random.default_rng(3), 20_000)  # > PREDICT_CHUNK: several chunks
    # Reference: features -> trunk -> phi with bias, times the adapted head (no folding, no tables),
    # plus the analytical proxies the shots gave weight to (MACs, values moved, additive table).
    t = adapted.tspace
    counts = t.counts(G)
    raw = np.column_stack([t.macs(G) / 1e6, (counts[:, 1] + counts[:, 2]) / 1e6, t.layers(G), counts[:, 1] / 1e6,
                           counts[:, 2] / 1e6, t.op_counts(G), t.typed_work(G)])
    plain = np.mean([Phi @ m["w"] + raw @ m["proxy"] + adapted.tspace.additive_features(G) @ m["additive"]
                     for Phi, m in zip(adapted.embed(G), adapted.members_)], 0)
    np.testing.assert_allclose(adapted.predict(G), plain * adapted.y_std_ + adapted.y_mean_, rtol=1e-5, atol=1e-5)
    # Adapting again (in place or as a copy) drops the caches of the previous device.
    other = adapted.adapt(np.linspace(3.0, 1.0, 10))
    assert not np.allclose(other.predict(G[:100]), adapted.predict(G[:100]))
    adapted.fit(adapted.reference_genomes_, np.linspace(3.0, 1.0, 10))
    np.testing.assert_allclose(adapted.predict(G[:100]), other.predict(G[:100]), rtol=1e-6)


def test_leave_one_out_chooses_prior_scale_and_noise_again_without_the_left_out_shot():
    """_blr's leave-one-out prediction of each shot is the posterior mean of a fit on the other shots at
    the grid's (a, s2) that maximise their marginal likelihood (brute force: refit on n-1 shots)."""
    from hwnas.predictors.fewshot import _blr

    rng = np.random.default_rng(0)
    B = rng.normal(size=(12, 4))
    z = B @ rng.normal(size=4) + 0.3 * rng.normal(size=12)
    z[3] += 3.0  # an outlier: the grid point chosen without it differs from the one chosen with it
    mean, cov = np.zeros(4), np.eye(4)
    fit = _blr(B, z, mean, cov)
    for i in range(len(z)):
        keep = np.arange(len(z)) != i
        other = _blr(B[keep], z[keep], mean, cov)
        assert fit["loo_mu"][i] == pytest.approx(B[i] @ other["beta"], abs=1e-8)
        assert fit["loo_ll"][i] == pytest.approx(other["ll"], abs=1e-8)


def test_candidate_weights_average_over_bootstrapped_shots():
    """Pseudo-BMA+: a candidate whose leave-one-out error is all on one shot keeps a share of the weight
    (plain pseudo-BMA, exp(-n/2 log MSE), gives it 6%), so one shot does not decide the choice alone."""
    from hwnas.predictors.fewshot import _loo_weights

    z = np.linspace(-1.0, 1.0, 10)
    even = z + 0.1 * np.tile([1.0, -1.0], 5)  # LOO MSE 0.010, spread over every shot
    one_off = z.copy()
    one_off[4] += 0.42  # LOO MSE 0.018, all of it on one shot
    fits = {"even": {"loo_mu": even}, "one_off": {"loo_mu": one_off}}
    plain = 1.0 / (1.0 + (np.mean((even - z) ** 2) / np.mean((one_off - z) ** 2)) ** -5)
    w = _loo_weights(fits, z)
    assert plain < 0.07 and 0.2 < w["one_off"] < 0.5 and w["even"] > w["one_off"]
    assert abs(sum(w.values()) - 1.0) < 1e-9
    assert w == _loo_weights(fits, z)  # seeded draws: deterministic
