"""Pareto fronts and hypervolume (pymoo's non-dominated sorting and HV indicator)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def nondominated(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of F (all objectives minimised)."""
    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return np.zeros(0, dtype=int)
    return np.asarray(NonDominatedSorting().do(F, only_non_dominated_front=True), dtype=int)


def normalized_hypervolume(F: np.ndarray, ideal: np.ndarray, nadir: np.ndarray,
                           ref: float = 1.1) -> float:
    """HV of F after scaling each objective so ``ideal`` -> 0 and ``nadir`` -> 1; reference 1.1."""
    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return 0.0
    span = np.where(np.asarray(nadir) - np.asarray(ideal) > 0, np.asarray(nadir) - np.asarray(ideal), 1.0)
    scaled = (F - ideal) / span
    return float(HV(ref_point=np.full(F.shape[1], ref))(scaled))


def hv_ratio(F_found: np.ndarray, F_true: np.ndarray, ref: float = 1.1) -> Optional[float]:
    """HV(found) / HV(true front), both normalised by the true front's ideal and nadir."""
    true_front = np.asarray(F_true, dtype=float)[nondominated(F_true)]
    ideal, nadir = true_front.min(axis=0), true_front.max(axis=0)
    hv_true = normalized_hypervolume(true_front, ideal, nadir, ref)
    return normalized_hypervolume(F_found, ideal, nadir, ref) / hv_true if hv_true > 0 else None
