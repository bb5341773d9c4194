"""Accuracy predictors with the scikit-learn estimator API.

:class:`AccuracyPredictor` picks, by cross-validation on the measured samples, among a
few well-kept scikit-learn regressors and refits the winner on all samples. Models that
give uncertainty (Gaussian process, random forest) answer ``predict(X, return_std=True)``.
"""

from __future__ import annotations

import warnings
from typing import Dict, Sequence

import numpy as np
from scipy.stats import kendalltau
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, check_X_y, check_array

from hwnas.registry import Registry

ACCURACY_MODELS = Registry("accuracy model")


@ACCURACY_MODELS.register("ridge")
def ridge(random_state: int = 0):
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))


@ACCURACY_MODELS.register("random_forest")
def random_forest(random_state: int = 0):
    return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=random_state, n_jobs=1)


@ACCURACY_MODELS.register("gradient_boosting")
def gradient_boosting(random_state: int = 0):
    return GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.05, subsample=0.8,
                                     random_state=random_state)


@ACCURACY_MODELS.register("gaussian_process")
def gaussian_process(random_state: int = 0):
    kernel = ConstantKernel(1.0) * Matern(length_scale=1.0, nu=2.5) + WhiteKernel(1e-3)
    return GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=random_state,
                                    n_restarts_optimizer=2)


@ACCURACY_MODELS.register("mlp")
def mlp(random_state: int = 0):
    return make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(64, 64), alpha=1e-3, max_iter=2000,
                                                        early_stopping=False, random_state=random_state))


class AccuracyPredictor(RegressorMixin, BaseEstimator):
    """Cross-validated choice among ``models``; ``fit`` returns self.

    Parameters
    ----------
    models : names in ``ACCURACY_MODELS`` to choose from.
    cv : number of folds (capped by the number of samples).
    random_state : seeds every model and the fold split, so a fit is repeatable.
    """

    def __init__(self, models: Sequence[str] = ("ridge", "random_forest", "gaussian_process", "gradient_boosting"),
                 cv: int = 5, random_state: int = 0):
        self.models = models
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y):
        with warnings.catch_warnings():  # GP hyper-parameters at their bounds are expected on few samples
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._fit(X, y)

    def _fit(self, X, y):
        X, y = check_X_y(X, y, dtype=float, y_numeric=True)
        if len(y) < 4:
            raise ValueError(f"AccuracyPredictor needs at least 4 samples, got {len(y)}")
        self.cv_scores_: Dict[str, float] = {}
        folds = KFold(n_splits=min(self.cv, len(y)), shuffle=True, random_state=self.random_state)
        for name in self.models:
            pred = np.empty_like(y)
            for train, test in folds.split(X):
                model = ACCURACY_MODELS.create(name, random_state=self.random_state).fit(X[train], y[train])
                pred[test] = model.predict(X[test])
            tau = kendalltau(pred, y).statistic
            self.cv_scores_[name] = float(tau) if np.isfinite(tau) else -1.0
        self.model_name_ = max(self.cv_scores_, key=self.cv_scores_.get)
        self.model_ = ACCURACY_MODELS.create(self.model_name_, random_state=self.random_state).fit(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X, return_std: bool = False):
        check_is_fitted(self, "model_")
        X = check_array(X, dtype=float)
        if not return_std:
            return self.model_.predict(X)
        if isinstance(self.model_, GaussianProcessRegressor):
            return self.model_.predict(X, return_std=True)
        if isinstance(self.model_, RandomForestRegressor):
            per_tree = np.stack([t.predict(X) for t in self.model_.estimators_])
            return per_tree.mean(axis=0), per_tree.std(axis=0)
        raise ValueError(f"model {self.model_name_!r} gives no uncertainty; use return_std=False")

    def score_kendall(self, X, y) -> float:
        return float(kendalltau(self.predict(X), y).statistic)
