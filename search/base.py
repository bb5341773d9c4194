"""The strategy contract and registry.

A strategy is built from the run's ``strategy`` settings (:class:`hwnas.config.StrategyConfig`)
by its registered factory and searches with ``run(loop)``: it asks a
:class:`~hwnas.search.loop.SearchLoop` for measurements (counted against the budget of
evaluations) or predictions (free) and stops when ``loop.exhausted``. It keeps no state the
loop cannot rebuild: a resumed run replays it with the same seed, answered from the store.
"""

from __future__ import annotations

from typing import Protocol

from hwnas.registry import Registry

from .loop import SearchLoop

STRATEGIES = Registry("strategy")


class Strategy(Protocol):
    def run(self, loop: SearchLoop) -> None: ...


def create_strategy(cfg) -> Strategy:
    """The strategy a ``StrategyConfig`` names."""
    return STRATEGIES.create(cfg.name, cfg=cfg)
