"""Accuracy predictors with the scikit-learn estimator API.

:class:`AccuracyPredictor` picks, by cross-validation on the measured samples, among a
few well-kept scikit-learn regressors and refits the winner on all samples. Models that
give uncertainty (Gaussian process, random forest, MLP, ensemble) answer
``predict(X, return_std=True)``; every model's ``fit`` returns the model.

Every model fits on one thread (``n_jobs=1``, and :class:`AccuracyPredictor` limits BLAS to
one thread): the search fits them beside measuring jobs. :class:`AccuracyPredictor` predicts
a batch of more than ``BLOCK_ROWS`` rows on 2 threads by default (``n_jobs``). Settings were
chosen on NB201 (seed 0) and checked on measured supernet sub-networks, for rank quality and
prediction rate (benchmarks/accuracy_predictors.py).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Sequence

import numpy as np
from scipy.stats import kendalltau
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, DotProduct, RBF, WhiteKernel
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y
from threadpoolctl import ThreadpoolController

from hwnas.registry import Registry

ACCURACY_MODELS = Registry("accuracy model")
_CONTROLLER: ThreadpoolController | None = None


def limit_blas(n: int | None = 1):
    """Context limiting BLAS to ``n`` threads (None: unchanged). The library scan is done once:
    ``threadpool_limits`` rescans on every call (~10 ms), which dominated small predictions."""
    global _CONTROLLER
    if n is None:
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=n, user_api="blas")
#: Members of the ``ensemble`` model (each also a model of its own). The random forest is not one:
#: with it the ensemble ranked no better and predicted at half the rate (benchmarks/accuracy_predictors.py).
ENSEMBLE_MEMBERS = ("gradient_boosting", "mlp")


class ForestWithStd(RandomForestRegressor):
    """A random forest whose ``predict(X, return_std=True)`` also gives the spread across trees.

    Single-output with ``n_jobs=1``, it sums the trees' ``tree_.predict`` on the calling thread:
    the same sum as scikit-learn's, without its per-tree overhead on small row blocks.
    """

    def predict(self, X, return_std: bool = False):
        fast = self.n_jobs in (None, 1) and getattr(self, "n_outputs_", 1) == 1
        if not return_std and not fast:
            return super().predict(X)
        check_is_fitted(self)
        X = self._validate_X_predict(X)
        if not return_std:
            total = np.zeros(len(X))
            for t in self.estimators_:
                total += t.tree_.predict(X)[:, 0]
            return total / len(self.estimators_)
        per_tree = np.stack([t.predict(X, check_input=False) for t in self.estimators_])
        return per_tree.mean(0), per_tree.std(0)


class MeanEnsemble(RegressorMixin, BaseEstimator):
    """Mean of member regressors; ``return_std`` gives the spread of the members' predictions."""

    def __init__(self, members: Sequence = ()):
        self.members = members

    def fit(self, X, y):
        self.members_ = [clone(m).fit(X, y) for m in self.members]
        return self

    def _all(self, X) -> np.ndarray:
        check_is_fitted(self, "members_")
        return np.stack([m.predict(X) for m in self.members_])

    def predict(self, X, return_std: bool = False):
        preds = self._all(X)
        return (preds.mean(0), preds.std(0)) if return_std else preds.mean(0)


@ACCURACY_MODELS.register("ridge")
def ridge(random_state: int = 0):
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))


@ACCURACY_MODELS.register("random_forest")
def random_forest(random_state: int = 0):
    return ForestWithStd(n_estimators=100, min_samples_leaf=1, max_features=0.5, random_state=random_state,
                         n_jobs=1)


class TreeByTreeBoosting(GradientBoostingRegressor):
    """Gradient boosting whose ``predict`` adds the trees' ``tree_.predict`` one by one: the same
    sum in the same order as scikit-learn's, which holds the GIL throughout; this releases it,
    so row blocks predict side by side on threads. Squared error with the default init only."""

    def predict(self, X):
        if self.loss != "squared_error" or self.init is not None:
            return super().predict(X)
        check_is_fitted(self)
        X = self.estimators_[0, 0]._validate_X_predict(X, check_input=True)
        raw = self.init_.predict(X).astype(np.float64)
        for tree in self.estimators_[:, 0]:
            raw += self.learning_rate * tree.tree_.predict(X)[:, 0]
        return raw


@ACCURACY_MODELS.register("gradient_boosting")
def gradient_boosting(random_state: int = 0):
    return TreeByTreeBoosting(n_estimators=200, max_depth=4, learning_rate=0.06, subsample=0.8,
                                     random_state=random_state)


@ACCURACY_MODELS.register("gaussian_process")
def gaussian_process(random_state: int = 0):
    # Standardised inputs, normalised targets; RBF for interactions, linear for the additive trend.
    kernel = (ConstantKernel(1.0, (1e-2, 1e2)) * RBF(length_scale=5.0, length_scale_bounds=(0.5, 1e3))
              + ConstantKernel(0.1, (1e-4, 1e1)) * DotProduct(sigma_0=1.0, sigma_0_bounds="fixed")
              + WhiteKernel(0.1, (1e-5, 1e1)))
    gp = OneThreadGP(kernel=kernel, normalize_y=True, random_state=random_state, n_restarts_optimizer=0)
    return Pipeline([("scale", StandardScaler()), ("gp", gp)])


class ScaledMLP(RegressorMixin, BaseEstimator):
    """A small MLP on standardised inputs and targets, weight decay ``alpha_scale / n_samples``.

    Fixed 200 epochs of Adam (no early stopping: a 10-15 % validation split of 100 samples
    stops it before it has learned anything); the decay shrinks as samples grow.
    """

    def __init__(self, hidden=(128, 64), alpha_scale: float = 100.0, epochs: int = 200, random_state: int = 0):
        self.hidden = hidden
        self.alpha_scale = alpha_scale
        self.epochs = epochs
        self.random_state = random_state

    def fit(self, X, y):
        with limit_blas(1):  # small matrices: threads only spin
            return self._fit(X, y)

    def _fit(self, X, y):
        net = MLPRegressor(hidden_layer_sizes=tuple(self.hidden), alpha=self.alpha_scale / len(y),
                           batch_size=min(64, len(y)), learning_rate_init=1e-3, max_iter=self.epochs,
                           early_stopping=False, random_state=self.random_state)
        with warnings.catch_warnings():  # "max_iter reached" is the intended stopping rule
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_ = make_pipeline(StandardScaler(), TransformedTargetRegressor(
                regressor=net, transformer=StandardScaler())).fit(X, y)
        return self

    def predict(self, X):
        check_is_fitted(self, "model_")
        with limit_blas(1):
            return self.model_.predict(X)


class OneThreadGP(GaussianProcessRegressor):
    """A Gaussian process whose fit and predict run BLAS on one thread (shared CPUs)."""

    def fit(self, X, y):
        with limit_blas(1):
            return super().fit(X, y)

    def predict(self, X, return_std: bool = False, return_cov: bool = False):
        with limit_blas(1):
            return super().predict(X, return_std=return_std, return_cov=return_cov)


class StackedMLPs(MeanEnsemble):
    """Mean of :class:`ScaledMLP` members (of equal layer sizes), predicted in one stacked pass.

    ``fit`` folds each member's input scaling into its first layer and stacks the layers, so
    every member's forward pass is one float32 matrix product per layer; it agrees with the
    members' own float64 ``predict`` to ~1e-6 of the target spread.
    """

    def fit(self, X, y):
        super().fit(X, y)
        nets, scalers, targets = [], [], []
        for m in self.members_:
            scaler, ttr = m.model_[0], m.model_[-1]
            net = ttr.regressor_
            if net.activation != "relu" or net.out_activation_ != "identity" or net.n_outputs_ != 1:
                raise ValueError("StackedMLPs needs single-output relu MLPs")
            nets.append(net)
            scalers.append(scaler)
            targets.append(ttr.transformer_)
        first = [(n.coefs_[0] / s.scale_[:, None], n.intercepts_[0] - (s.mean_ / s.scale_) @ n.coefs_[0])
                 for n, s in zip(nets, scalers)]
        layers = [(np.concatenate([w for w, _ in first], 1), np.concatenate([b for _, b in first]))]
        for i in range(1, len(nets[0].coefs_)):
            layers.append((np.stack([n.coefs_[i] for n in nets]), np.stack([n.intercepts_[i] for n in nets])[:, None]))
        self.layers_ = [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]
        self.y_mean_ = np.array([t.mean_[0] for t in targets])
        self.y_scale_ = np.array([t.scale_[0] for t in targets])
        return self

    def _all(self, X) -> np.ndarray:
        check_is_fitted(self, "layers_")
        X = check_array(X, dtype=np.float32)
        (w, b), *rest = self.layers_
        with limit_blas(1):
            h = X @ w
            h += b
            np.maximum(h, 0, out=h)
            h = h.reshape(len(X), len(self.members_), -1).transpose(1, 0, 2)  # (member, row, unit)
            for i, (w, b) in enumerate(rest):
                h = np.matmul(h, w)
                h += b
                if i < len(rest) - 1:
                    np.maximum(h, 0, out=h)
        return h[:, :, 0] * self.y_scale_[:, None] + self.y_mean_[:, None]


@ACCURACY_MODELS.register("mlp")
def mlp(random_state: int = 0, n_members: int = 5):
    return StackedMLPs([ScaledMLP(random_state=random_state * 100 + i) for i in range(n_members)])


@ACCURACY_MODELS.register("ensemble")
def ensemble(random_state: int = 0):
    return MeanEnsemble([ACCURACY_MODELS.create(m, random_state=random_state) for m in ENSEMBLE_MEMBERS])


def _gives_std(model) -> bool:
    return isinstance(model, (ForestWithStd, MeanEnsemble, GaussianProcessRegressor)) or (
        isinstance(model, Pipeline) and isinstance(model[-1], GaussianProcessRegressor))


def predict_with_std(model, X):
    """(mean, std) from a fitted model of :data:`ACCURACY_MODELS`; ValueError if it gives no uncertainty."""
    if _gives_std(model):
        return model.predict(X, return_std=True)
    raise ValueError(f"{type(model).__name__} gives no uncertainty; use return_std=False")


#: Rows predicted at a time (a block's features stay in cache); a batch of one block stays on the calling thread.
BLOCK_ROWS = 8192


def _threads(n_jobs: int | None) -> int:
    if n_jobs is None:
        return 1
    if n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be None, -1 or a positive number of threads, got {n_jobs}")
    return (os.cpu_count() or 1) if n_jobs == -1 else n_jobs


class AccuracyPredictor(RegressorMixin, BaseEstimator):
    """Cross-validated choice among ``models``; ``fit`` returns self.

    Parameters
    ----------
    models : names in ``ACCURACY_MODELS`` to choose from. ``ensemble`` is scored from its
        members' out-of-fold predictions when they are also candidates (no extra fits).
        ``gaussian_process`` is not a default candidate: on NB201 and on the supernet it
        ranked below the others at every size and is the slowest to fit
        (benchmarks/results/accuracy_predictors.md).
    blas_threads : BLAS threads while fitting and predicting (None: leave as is).
    cv : number of folds (capped by the number of samples).
    random_state : seeds every model and the fold split, so a fit is repeatable.
    n_jobs : threads for predicting a batch of more than ``BLOCK_ROWS`` rows (default 2; None: 1,
        -1: every core). Rows are predicted in blocks of ``BLOCK_ROWS``, side by side on threads
        (the trees and BLAS release the GIL); the answer does not depend on the thread count.
    """

    def __init__(self, models: Sequence[str] = ("ridge", "random_forest", "gradient_boosting", "mlp", "ensemble"),
                 cv: int = 5, random_state: int = 0, blas_threads: int | None = 1, n_jobs: int | None = 2):
        self.models = models
        self.cv = cv
        self.random_state = random_state
        self.blas_threads = blas_threads
        self.n_jobs = n_jobs

    def fit(self, X, y):
        # GP hyper-parameters at their bounds are expected on few samples. BLAS on one thread:
        # on a shared CPU a multi-threaded BLAS spins and fits run ~10x slower.
        with warnings.catch_warnings(), limit_blas(self.blas_threads):
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._fit(X, y)

    def _fit(self, X, y):
        X, y = check_X_y(X, y, dtype=float, y_numeric=True)
        if len(y) < 4:
            raise ValueError(f"AccuracyPredictor needs at least 4 samples, got {len(y)}")
        for name in self.models:
            if name not in ACCURACY_MODELS:
                raise ValueError(f"unknown accuracy model {name!r}; known: {', '.join(ACCURACY_MODELS.names())}")
        self.cv_scores_: Dict[str, float] = {}
        folds = list(KFold(n_splits=min(self.cv, len(y)), shuffle=True, random_state=self.random_state).split(X))
        oof: Dict[str, np.ndarray] = {}
        shortcut = "ensemble" in self.models and all(m in self.models for m in ENSEMBLE_MEMBERS)
        for name in self.models:
            if name == "ensemble" and shortcut:
                continue
            pred = np.empty_like(y)
            for train, test in folds:
                model = ACCURACY_MODELS.create(name, random_state=self.random_state).fit(X[train], y[train])
                pred[test] = model.predict(X[test])
            oof[name] = pred
        if shortcut:
            oof["ensemble"] = np.mean([oof[m] for m in ENSEMBLE_MEMBERS], axis=0)
        for name in self.models:
            tau = kendalltau(oof[name], y).statistic
            self.cv_scores_[name] = float(tau) if np.isfinite(tau) else -1.0
        self.cv_predictions_ = oof
        self.model_name_ = max(self.cv_scores_, key=self.cv_scores_.get)
        self.model_ = ACCURACY_MODELS.create(self.model_name_, random_state=self.random_state).fit(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X, return_std: bool = False):
        check_is_fitted(self, "model_")
        X = check_array(X, dtype=(np.float64, np.float32))  # float32 stays as is until its block
        if return_std and not _gives_std(self.model_):
            raise ValueError(f"model {self.model_name_!r} gives no uncertainty; use return_std=False")
        threads = _threads(self.n_jobs)
        blocks = [X[i:i + BLOCK_ROWS] for i in range(0, len(X), BLOCK_ROWS)]
        with limit_blas(self.blas_threads):  # the BLAS limit is process-wide: set it once, here
            if threads == 1 or len(blocks) == 1:
                parts = [self._predict_block(block, return_std) for block in blocks]
            else:
                with ThreadPoolExecutor(min(threads, len(blocks))) as pool:
                    parts = list(pool.map(lambda block: self._predict_block(block, return_std), blocks))
        if len(parts) == 1:
            return parts[0]
        if return_std:
            return np.concatenate([m for m, _ in parts]), np.concatenate([s for _, s in parts])
        return np.concatenate(parts)

    def _predict_block(self, X, return_std: bool):
        X = X.astype(np.float64, copy=False)  # as fitted
        return predict_with_std(self.model_, X) if return_std else self.model_.predict(X)

    def score_kendall(self, X, y) -> float:
        return float(kendalltau(self.predict(X), y).statistic)


class TransferAccuracyPredictor(RegressorMixin, BaseEstimator):
    """An architecture-only (fp32) accuracy predictor transferred to compressed configs (APQ's idea).

    Accuracy of a pruned and/or int8 config = the fp32 predictor's accuracy for its architecture
    + a correction that depends on the compression: a ridge regression, fitted on the compressed
    samples' residuals, of the compression features and the fp32 prediction (a larger network loses
    a different amount to pruning). Few compressed samples fit the ~20 coefficients of the
    correction; the fp32 predictor, fitted on many cheaper architecture-only samples, keeps the
    ranking across architectures (benchmarks/accuracy_transfer.py).

    Parameters
    ----------
    base : a fitted regressor of architecture features (an :class:`AccuracyPredictor` fitted on
        fp32 sub-networks); it is used as given, not refitted. Its ``n_features_in_`` first columns
        of ``X`` are its features (a :class:`hwnas.dimensions.JointSpace` puts the architecture's
        first), the remaining columns are the compression features.
    alphas : ridge penalties to choose from by leave-one-out (RidgeCV).
    random_state : unused (the fit is deterministic); kept for the predictors' common signature.
    """

    def __init__(self, base=None, columns: Sequence[int] | None = None, with_base: bool = False,
                 alphas: Sequence[float] = tuple(np.logspace(-2, 3, 11)), random_state: int = 0):
        self.base = base
        self.columns = columns  # which compression features the correction uses (None: all)
        self.with_base = with_base  # the fp32 prediction as a correction feature too
        self.alphas = alphas
        self.random_state = random_state

    def _split(self, X):
        check_is_fitted(self.base)
        k = self.base.n_features_in_
        if X.shape[1] <= k:
            raise ValueError(f"X has {X.shape[1]} columns; the fp32 predictor takes {k}, so there are no "
                             f"compression features")
        base_pred = np.asarray(self.base.predict(X[:, :k]), dtype=float)
        comp = X[:, k:] if self.columns is None else X[:, k:][:, list(self.columns)]
        return base_pred, np.column_stack([comp, base_pred]) if self.with_base else comp

    def fit(self, X, y):
        if self.base is None:
            raise ValueError("TransferAccuracyPredictor needs base=, an fp32 accuracy predictor already fitted")
        X, y = check_X_y(X, y, dtype=float, y_numeric=True)
        if len(y) < 2:
            raise ValueError(f"TransferAccuracyPredictor needs at least 2 compressed samples, got {len(y)}")
        base_pred, Z = self._split(X)
        with limit_blas(1):
            self.correction_ = make_pipeline(StandardScaler(), RidgeCV(alphas=self.alphas)).fit(Z, y - base_pred)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        check_is_fitted(self, "correction_")
        X = check_array(X, dtype=float)
        base_pred, Z = self._split(X)
        with limit_blas(1):
            return base_pred + self.correction_.predict(Z)
