"""The loop's surrogate: every objective and budget column predicted from the measured candidates.

One multi-output random forest blended with a ridge regression on the same features
(scikit-learn API; all-positive columns in log space): each tree's prediction is
``(1 - linear_weight) x tree + linear_weight x ridge``. The forest catches interactions; the
linear part carries what is additive over the genes (latency is nearly a sum of per-layer
costs, accuracy roughly so) and extrapolates where a forest cannot, which matters most with
few samples (on the NB201 search benchmark, 8 device columns x 10 seeds, ``linas`` went from
0.948 / 0.987 to 0.961 / 0.990 mean HV ratio at 100 / 300 measurements with this blend and
``max_features=1.0`` in place of the forest alone at 0.5). It fits in tens of milliseconds, so it can be refitted
after every batch a strategy measures, and the (blended) trees' spread is an uncertainty
(``return_std``).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import RidgeCV


class Surrogate(RegressorMixin, BaseEstimator):
    def __init__(self, n_estimators: int = 32, max_features: float = 1.0, linear_weight: float = 0.3,
                 random_state: int = 0):
        self.n_estimators, self.max_features, self.random_state = n_estimators, max_features, random_state
        self.linear_weight = linear_weight

    def fit(self, X, Y):
        Y = np.asarray(Y, dtype=float)
        # Columns that are all positive (latency, energy, ...) are fitted in log space: costs scale
        # multiplicatively with the architecture, and the trees' means then follow ratios, not ms.
        self.log_ = (Y > 0).all(axis=0)
        Y = np.where(self.log_, np.log(np.where(self.log_, Y, 1.0)), Y)
        self.n_outputs_ = Y.shape[1] if Y.ndim == 2 else 1
        self.forest_ = RandomForestRegressor(n_estimators=self.n_estimators, max_features=self.max_features,
                                             random_state=self.random_state, n_jobs=1).fit(X, Y)
        self.ridge_ = RidgeCV(alphas=np.logspace(-2, 2, 9)).fit(X, Y) if self.linear_weight > 0 else None
        return self

    def per_tree(self, X):
        """(trees, n, outputs): each tree's prediction, back on the scale it was fitted on."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        T = np.stack([t.tree_.predict(X)[:, :, 0] for t in self.forest_.estimators_])
        if self.ridge_ is not None:
            R = self.ridge_.predict(X).reshape(len(X), -1)
            T = (1.0 - self.linear_weight) * T + self.linear_weight * R[None]
        return np.where(self.log_, np.exp(T), T)

    def predict(self, X, return_std: bool = False):
        # The trees' own predict, summed here: scikit-learn's forest predict goes through joblib,
        # which costs milliseconds per call, and a search on the predictions calls it thousands of times.
        per_tree = self.per_tree(X)
        return (per_tree.mean(0), per_tree.std(0)) if return_std else per_tree.mean(0)
