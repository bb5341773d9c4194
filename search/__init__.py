"""Multi-objective search: the loop strategies see, strategies by name, fronts and hypervolume."""

from .hypervolume import bounded_hypervolume, hv_ratio, nondominated, normalized_hypervolume
from .loop import Evaluator, SearchLoop, known_rows
from .strategies import STRATEGIES, Strategy, create_strategy

__all__ = ["STRATEGIES", "bounded_hypervolume", "Evaluator", "SearchLoop", "Strategy", "create_strategy", "hv_ratio", "known_rows",
           "nondominated", "normalized_hypervolume"]
