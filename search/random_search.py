"""``random``: distinct uniform random candidates, ``population`` per generation — the baseline."""

from __future__ import annotations

import numpy as np

from .base import STRATEGIES
from .loop import SearchLoop


class RandomSearch:
    def __init__(self, cfg):
        self.cfg = cfg

    def run(self, loop: SearchLoop) -> None:
        rng = np.random.default_rng(self.cfg.seed)
        while not loop.exhausted:
            X = loop.sample_unseen(rng, min(self.cfg.population, loop.remaining))
            if not len(X):
                break
            loop.measure(X)
            loop.end_generation()


@STRATEGIES.register("random")
def random_search(cfg) -> RandomSearch:
    return RandomSearch(cfg)
