"""Accuracy and cost predictors (scikit-learn estimator API)."""

from .accuracy import ACCURACY_MODELS, AccuracyPredictor, TransferAccuracyPredictor

__all__ = ["ACCURACY_MODELS", "AccuracyPredictor", "TransferAccuracyPredictor"]
