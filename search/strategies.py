"""Search strategies by name (registry ``STRATEGIES``); each strategy is one module honouring
the contract of :mod:`hwnas.search.base` and :mod:`hwnas.search.loop`."""

from .base import STRATEGIES, Strategy, create_strategy
from . import linas, nsga2, optuna_search, random_search  # noqa: F401  (they register themselves)

__all__ = ["STRATEGIES", "Strategy", "create_strategy"]
