"""Multi-objective search: strategies by name, the pymoo problem, fronts and hypervolume."""

from .hypervolume import hv_ratio, nondominated, normalized_hypervolume
from .problem import ExperimentProblem
from .strategies import STRATEGIES

__all__ = ["STRATEGIES", "ExperimentProblem", "hv_ratio", "nondominated", "normalized_hypervolume"]
