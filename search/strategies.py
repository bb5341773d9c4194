"""Search strategies by name. Each drives an :class:`ExperimentProblem` to its budget.

A strategy only proposes genomes; evaluation, caching and storage live behind the
problem, so every strategy resumes the same way (a seeded replay answered by the store).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.callback import Callback
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.optimize import minimize

from hwnas.registry import Registry

from .problem import ExperimentProblem

STRATEGIES = Registry("strategy")
GenerationHook = Optional[Callable[[int], None]]


class _GenerationCallback(Callback):
    def __init__(self, problem: ExperimentProblem, hook: GenerationHook):
        super().__init__()
        self.problem, self.hook = problem, hook

    def notify(self, algorithm):
        finished = int(algorithm.n_iter)
        self.problem.generation = finished + 1
        if self.hook:
            self.hook(finished)


@STRATEGIES.register("nsga2")
def nsga2(problem: ExperimentProblem, population: int, generations: int, seed: int,
          on_generation: GenerationHook = None) -> None:
    """pymoo's NSGA-II on integer genes (rounded SBX and polynomial mutation), duplicates removed."""
    algorithm = NSGA2(
        pop_size=population,
        sampling=IntegerRandomSampling(),
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    minimize(problem, algorithm, ("n_gen", generations), seed=seed, verbose=False,
             callback=_GenerationCallback(problem, on_generation), copy_algorithm=False)


@STRATEGIES.register("random")
def random_search(problem: ExperimentProblem, population: int, generations: int, seed: int,
                  on_generation: GenerationHook = None) -> None:
    """Uniform random genomes, ``population`` per generation: the baseline every search must beat."""
    rng = np.random.default_rng(seed)
    upper = problem.xu.astype(int)
    for generation in range(1, generations + 1):
        genomes = np.stack([rng.integers(0, u + 1, size=population) for u in upper], axis=1)
        problem.generation = generation
        problem.evaluate(genomes)
        if on_generation:
            on_generation(generation)
