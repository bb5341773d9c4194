"""Accuracy predictors: the scikit-learn contract, CV selection, supernet features, the cached sub-network table."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest
from scipy.stats import kendalltau
from sklearn.base import clone
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

from conftest import BENCH, ROOT, requires
from hwnas.errors import HwnasError
from hwnas.predictors import ACCURACY_MODELS, AccuracyPredictor
from hwnas.predictors.accuracy import BLOCK_ROWS, ENSEMBLE_MEMBERS, predict_with_std
from hwnas.predictors.features import elastic_mbv3_features
from hwnas.space import Choice, SearchSpace

SUBNETS_CSV = ROOT / "benchmarks" / "results" / "accuracy_subnets.csv"
NOISE_CSV = ROOT / "benchmarks" / "results" / "accuracy_subnets_noise.csv"
UNCERTAIN = {"random_forest", "gaussian_process", "mlp", "ensemble"}


def toy(n=120, seed=0):
    """y depends non-linearly on a few of 12 binary features, plus a little noise."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, (n, 12)).astype(float)
    y = 70 + 5 * X[:, 0] + 3 * X[:, 1] * X[:, 2] - 4 * X[:, 3] * (1 - X[:, 4]) + rng.normal(0, 0.3, n)
    return X, y


@pytest.mark.parametrize("name", ACCURACY_MODELS.names())
def test_every_model_follows_the_sklearn_contract(name, one_torch_thread):
    X, y = toy()
    model = ACCURACY_MODELS.create(name, random_state=0)
    assert model.fit(X[:90], y[:90]) is model
    pred = model.predict(X[90:])
    assert pred.shape == (30,) and np.isfinite(pred).all()
    assert kendalltau(pred, y[90:]).statistic > 0.5, name  # the signal is easy: every model must find it
    if name in UNCERTAIN:
        mean, std = predict_with_std(model, X[90:])
        np.testing.assert_allclose(mean, pred, rtol=1e-6)
        assert std.shape == (30,) and (std >= 0).all() and std.max() > 0
    else:
        with pytest.raises(ValueError, match="no uncertainty"):
            predict_with_std(model, X[90:])
    # Same seed, same fit; a clone fits alike.
    again = ACCURACY_MODELS.create(name, random_state=0).fit(X[:90], y[:90]).predict(X[90:])
    np.testing.assert_allclose(clone(model).fit(X[:90], y[:90]).predict(X[90:]), pred, rtol=1e-6)
    np.testing.assert_allclose(again, pred, rtol=1e-6)


def test_cv_selection_scores_the_ensemble_from_its_members(one_torch_thread):
    X, y = toy(80)
    model = AccuracyPredictor(random_state=0)
    assert model.fit(X, y) is model
    assert set(model.cv_scores_) == {"ridge", "random_forest", "gradient_boosting", "mlp", "ensemble"}
    assert model.model_name_ == max(model.cv_scores_, key=model.cv_scores_.get)
    # The shortcut (mean of the members' out-of-fold predictions) equals cross-validating the ensemble itself.
    alone = AccuracyPredictor(models=("ensemble",), random_state=0).fit(X, y)
    np.testing.assert_allclose(alone.cv_predictions_["ensemble"], model.cv_predictions_["ensemble"], rtol=1e-6)
    np.testing.assert_allclose(model.cv_predictions_["ensemble"],
                               np.mean([model.cv_predictions_[m] for m in ENSEMBLE_MEMBERS], 0))
    # return_std where the chosen model has it, a clear error where it has not.
    mean, std = alone.predict(X[:5], return_std=True)
    assert mean.shape == std.shape == (5,) and std.max() > 0
    ridge_only = AccuracyPredictor(models=("ridge",)).fit(X, y)
    with pytest.raises(ValueError, match="'ridge' gives no uncertainty"):
        ridge_only.predict(X[:5], return_std=True)
    with pytest.raises(ValueError, match="unknown accuracy model 'svm'"):
        AccuracyPredictor(models=("svm",)).fit(X, y)
    with pytest.raises(ValueError, match="at least 4 samples"):
        AccuracyPredictor().fit(X[:3], y[:3])


@pytest.mark.parametrize("name", ["ensemble", "random_forest"])
def test_threaded_prediction_equals_one_thread(name, one_torch_thread):
    """Large batches, predicted in row blocks on threads, give exactly the one-thread answer."""
    X, y = toy(80)
    model = AccuracyPredictor(models=(name,), random_state=0, n_jobs=None).fit(X, y)
    Q = np.random.default_rng(1).integers(0, 2, (3 * BLOCK_ROWS - 5, 12)).astype(float)
    mean, std = model.predict(Q, return_std=True)
    for n_jobs in (2, 3, -1):
        mean_t, std_t = model.set_params(n_jobs=n_jobs).predict(Q, return_std=True)
        np.testing.assert_array_equal(mean_t, mean)
        np.testing.assert_array_equal(std_t, std)
    np.testing.assert_array_equal(model.predict(Q.astype(np.float32)), mean)  # float32 in: the same answer
    # A small batch is one block: float32 matrix products of another size may round differently.
    np.testing.assert_allclose(model.predict(Q[:7]), mean[:7], rtol=1e-9)
    assert AccuracyPredictor().n_jobs == 2  # large batches use both cores unless told otherwise
    with pytest.raises(ValueError, match="n_jobs"):
        model.set_params(n_jobs=0).predict(Q)


def test_fast_predict_paths_equal_the_reference_computation(one_torch_thread):
    """Forest and boosting sum their trees exactly as scikit-learn does; the stacked MLP pass
    matches the members' own (float64) predictions."""
    X, y = toy(200, seed=3)
    Q = np.random.default_rng(2).integers(0, 2, (5000, 12)).astype(float)
    forest = ACCURACY_MODELS.create("random_forest", random_state=0).fit(X, y)
    np.testing.assert_array_equal(forest.predict(Q), RandomForestRegressor.predict(forest, Q))
    boost = ACCURACY_MODELS.create("gradient_boosting", random_state=0).fit(X, y)
    assert len(boost.estimators_) > 100
    np.testing.assert_array_equal(boost.predict(Q), GradientBoostingRegressor.predict(boost, Q))
    mlps = ACCURACY_MODELS.create("mlp", random_state=0).fit(X, y)
    reference = np.stack([m.predict(Q) for m in mlps.members_])
    np.testing.assert_allclose(mlps._all(Q), reference, rtol=0, atol=1e-5 * y.std())
    np.testing.assert_allclose(mlps.predict(Q), reference.mean(0), rtol=0, atol=1e-5 * y.std())
    assert np.abs(reference - reference.mean(0)).max() > 1e-3  # the members differ: a mix-up would show


def mbv3_space(blocks=6, stages=2):
    return SearchSpace([Choice(f"ks{b}", (3, 5, 7)) for b in range(blocks)]
                       + [Choice(f"e{b}", (3, 4, 6)) for b in range(blocks)]
                       + [Choice(f"d{i}", (2, 3)) for i in range(stages)] + [Choice("r", (16, 20, 24))], "toy_mbv3")


def test_elastic_features_ignore_switched_off_slots():
    space = mbv3_space()  # 2 stages of 3 slots; depth 2 switches slot 2 (and 5) off
    config = {**{f"ks{b}": 3 for b in range(6)}, **{f"e{b}": 3 for b in range(6)}, "d0": 2, "d1": 3, "r": 20}
    base = space.encode(config)
    off = space.encode({**config, "ks2": 7, "e2": 6})  # slot 2 is off at d0 = 2
    on = space.encode({**config, "ks4": 7})  # slot 4 runs (d1 = 3)
    F = elastic_mbv3_features(space, np.stack([base, off, on]))
    assert F.dtype == np.float32 and F.shape[0] == 3
    np.testing.assert_array_equal(F[0], F[1])
    assert not np.array_equal(F[0], F[2])
    # The plain genome features do see the switched-off genes.
    assert not np.array_equal(space.features([base])[0], space.features([off])[0])
    deeper = space.encode({**config, "d0": 3})
    assert not np.array_equal(elastic_mbv3_features(space, [deeper])[0], F[0])
    with pytest.raises(HwnasError, match="not an elastic MobileNetV3 space"):
        elastic_mbv3_features(SearchSpace([Choice("a", (1, 2))], "other"), [[0]])
    with pytest.raises(HwnasError, match="shape"):
        elastic_mbv3_features(space, np.zeros((2, 3), dtype=int))


def reference_features(space, genome) -> np.ndarray:
    """Per-row, plain-Python statement of the elastic MobileNetV3 feature layout (pins the vectorised one)."""
    opts = {v.name: v.options for v in space.variables}
    g = dict(zip(opts, (int(x) for x in genome)))
    n_stages = sum(name.startswith("d") for name in opts)
    n_blocks = sum(name.startswith("ks") for name in opts)
    depth = n_blocks // n_stages
    K, E, D, R = opts["ks0"], opts["e0"], opts["d0"], opts["r"]
    on = [b % depth < D[g[f"d{b // depth}"]] for b in range(n_blocks)]
    f = [float(on[b] and g[f"ks{b}"] == i) for b in range(n_blocks) for i in range(len(K))]
    f += [float(on[b] and g[f"e{b}"] == i) for b in range(n_blocks) for i in range(len(E))]
    f += [float(g[f"d{s}"] == i) for s in range(n_stages) for i in range(len(D))]
    f += [float(g["r"] == i) for i in range(len(R))]
    for gene, options in (("ks", K), ("e", E)):
        f += [sum(on[b] and g[f"{gene}{b}"] == i for b in range(s * depth, (s + 1) * depth)) / depth
              for s in range(n_stages) for i in range(len(options))]
    r = R[g["r"]]
    f += [sum(on) / n_blocks, (r - min(R)) / max(max(R) - min(R), 1.0)]
    work = sum(E[g[f"e{b}"]] * K[g[f"ks{b}"]] ** 2 for b in range(n_blocks) if on[b]) * (r / max(R)) ** 2
    f.append(np.log(max(work, 1e-9) / (n_blocks * max(E) * max(K) ** 2)) / 4.0)
    return np.array(f, dtype=np.float32)


@pytest.mark.parametrize("blocks,stages", [(6, 2), (12, 3)])
def test_elastic_features_equal_a_per_row_reference(blocks, stages):
    space = mbv3_space(blocks, stages)
    G = space.sample(np.random.default_rng(blocks), 300)
    G = np.vstack([G, space.smallest(), space.largest()])
    F = elastic_mbv3_features(space, G)
    np.testing.assert_array_equal(F, np.stack([reference_features(space, g) for g in G]))
    with pytest.raises(HwnasError, match="out of range"):
        elastic_mbv3_features(space, np.where(np.arange(space.n_var) == 0, 3, G[0]))
    with pytest.raises(HwnasError, match="out of range"):
        elastic_mbv3_features(space, np.where(np.arange(space.n_var) == 0, -1, G[0]))


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(not SUBNETS_CSV.is_file(), reason="no cached sub-network table")
def test_cached_subnet_table_is_distinct_and_reproducible(one_torch_thread):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import accuracy_predictors as bench

    from hwnas import supernets
    from hwnas.supernets import arch_key, config_from_arch_key

    rows = read(SUBNETS_CSV)
    assert len(rows) >= 500
    net = supernets.load_default()
    canon = {arch_key(bench.canonical(net, config_from_arch_key(r["arch_key"]))) for r in rows}
    assert len(canon) == len(rows)  # distinct networks, not just distinct genomes
    acc = np.array([float(r["accuracy"]) for r in rows])
    assert ((acc > 0.5) & (acc < 1.0)).all() and acc.std() > 0.002
    # Re-measuring gives the cached value exactly (seeded calibration, one thread).
    again = bench.measure_subnets(0, keys=[rows[0]["arch_key"], rows[-1]["arch_key"]], log_every=0)
    np.testing.assert_allclose([a for _, a, _ in again], [acc[0], acc[-1]], atol=1e-4)
    noise = read(NOISE_CSV)
    assert len(noise) >= 20 and [r["arch_key"] for r in noise] == [r["arch_key"] for r in rows[: len(noise)]]


@requires(BENCH / "nb201.csv.gz")
def test_nb201_predictors_rank_held_out_architectures(one_torch_thread):
    from hwnas.tabular import TabularBenchmark

    bench = TabularBenchmark.load("nb201", BENCH / "nb201.csv.gz")
    y, X = bench.values("cifar10_acc"), bench.features(bench.genomes)
    order = np.random.default_rng(0).permutation(len(y))
    tr, te = order[:200], order[200:2200]
    for name, floor in (("mlp", 0.65), ("gaussian_process", 0.6), ("ensemble", 0.72)):
        pred = ACCURACY_MODELS.create(name, random_state=0).fit(X[tr], y[tr]).predict(X[te])
        assert kendalltau(pred, y[te]).statistic > floor, name
