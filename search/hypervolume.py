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


def bounded_hypervolume(F: np.ndarray, ideal: np.ndarray, nadir: np.ndarray) -> float:
    """The fraction of the box between ``ideal`` and ``nadir`` (fixed bounds) that F dominates, in [0, 1].

    Each objective is scaled so ideal -> 0 and nadir -> 1 and clipped to [0, 1]; the reference
    point is the nadir (1, ..., 1), so a point beyond a bound adds nothing on that side.
    """
    F = np.asarray(F, dtype=float)
    F = F[~np.isnan(F).any(axis=1)] if len(F) else F
    if len(F) == 0:
        return 0.0
    ideal, nadir = np.asarray(ideal, dtype=float), np.asarray(nadir, dtype=float)
    span = np.where(nadir - ideal > 0, nadir - ideal, 1.0)
    scaled = np.clip((F - ideal) / span, 0.0, 1.0)
    return float(min(1.0, HV(ref_point=np.ones(F.shape[1]))(scaled)))


def hv_ratio(F_found: np.ndarray, F_true: np.ndarray, ref: float = 1.1) -> Optional[float]:
    """HV(found) / HV(true front), both normalised by the true front's ideal and nadir."""
    true_front = np.asarray(F_true, dtype=float)[nondominated(F_true)]
    ideal, nadir = true_front.min(axis=0), true_front.max(axis=0)
    hv_true = normalized_hypervolume(true_front, ideal, nadir, ref)
    return normalized_hypervolume(F_found, ideal, nadir, ref) / hv_true if hv_true > 0 else None
