"""Baseline cost predictors for tabular spaces, fitted on a few samples of one device.

* :class:`FlopsPredictor` - analytical MACs (see :mod:`hwnas.tabular` for the count),
  linearly scaled to the samples' units when fitted; no fit needed for ranking.
* :class:`LayerwisePredictor` - an additive per-layer lookup table: one cost per
  (layer, option), ridge-regularised, fitted on the samples (layer-wise LUT estimate).
* :class:`NonMetaPredictor` - a Gaussian process on the same architecture features the
  few-shot predictor uses, fitted on the samples only (no meta-learning).

All take genomes of the space (int matrix) and follow the scikit-learn shape:
``fit(genomes, values)`` returns self, ``predict(genomes)`` returns an array.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, DotProduct, RBF, WhiteKernel
from sklearn.linear_model import Ridge

from hwnas.tabular import TabularSpace, space_from_spec


class _GenomeRegressor:
    def __init__(self, space: str | TabularSpace = "nb201"):
        self.space = space

    @property
    def tspace(self) -> TabularSpace:
        return self.space if isinstance(self.space, TabularSpace) else space_from_spec({"name": self.space})

    def _samples(self, genomes, values):
        return self.tspace.samples(genomes, values)


class FlopsPredictor(_GenomeRegressor):
    def fit(self, genomes, values) -> "FlopsPredictor":
        G, y = self._samples(genomes, values)
        A = np.stack([self.tspace.macs(G) / 1e6, np.ones(len(G))], 1)
        self.coef_ = np.linalg.lstsq(A, y, rcond=None)[0]
        return self

    def predict(self, genomes) -> np.ndarray:
        mmacs = self.tspace.macs(genomes) / 1e6
        if not hasattr(self, "coef_"):
            return mmacs
        return self.coef_[0] * mmacs + self.coef_[1]


class LayerwisePredictor(_GenomeRegressor):
    def __init__(self, space: str | TabularSpace = "nb201", alpha: float = 1.0):
        super().__init__(space)
        self.alpha = alpha

    def fit(self, genomes, values) -> "LayerwisePredictor":
        G, y = self._samples(genomes, values)
        self.model_ = Ridge(alpha=self.alpha).fit(self.tspace.additive_features(G), y)
        return self

    def predict(self, genomes) -> np.ndarray:
        return self.model_.predict(self.tspace.additive_features(genomes))


class NonMetaPredictor(_GenomeRegressor):
    """GP (linear + RBF + noise kernel, hyper-parameters by marginal likelihood) on features."""

    def __init__(self, space: str | TabularSpace = "nb201", seed: int = 0):
        super().__init__(space)
        self.seed = seed

    def fit(self, genomes, values) -> "NonMetaPredictor":
        G, y = self._samples(genomes, values)
        X = self.tspace.features(G)
        kernel = (
            ConstantKernel(1.0) * DotProduct(sigma_0=1.0)
            + ConstantKernel(1.0) * RBF(length_scale=np.sqrt(X.shape[1]))
            + WhiteKernel(0.1)
        )
        with warnings.catch_warnings():
            # Hyper-parameters at a bound are expected with 10 samples (e.g. no RBF part).
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model_ = GaussianProcessRegressor(
                kernel, normalize_y=True, n_restarts_optimizer=2, random_state=self.seed
            ).fit(X, y)
        return self

    def predict(self, genomes) -> np.ndarray:
        return self.model_.predict(self.tspace.features(genomes))
