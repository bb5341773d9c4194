"""``nsga2``: pymoo's NSGA-II on integer genes, every offspring a candidate the run has not seen.

pymoo drops duplicates within a population only; asked again, a known candidate costs
nothing but brings nothing, so late generations would hold 2-5 new cells of 24. Here the
duplicate check also consults the loop, so each generation measures ``population`` new
candidates (topped up at random when mating cannot find enough) until the budget is spent.
Operators (rounded SBX and polynomial mutation) take ``strategy.crossover`` / ``mutation``.
The first population is the best of what the loop already knows (the run's initial design,
a warm start), by pymoo's rank and crowding, topped up at random: evolution starts from the
measured ends instead of discarding them.
"""

from __future__ import annotations

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2, RankAndCrowding
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.evaluator import Evaluator as PymooEvaluator
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.problems.static import StaticProblem
from pymoo.core.termination import NoTermination

from .base import STRATEGIES
from .loop import SearchLoop, known_rows


def genome_problem(loop: SearchLoop) -> Problem:
    """The loop's space in pymoo's shape; one extra constraint marks unknown values as infeasible."""
    upper = loop.space.upper.astype(float)
    return Problem(n_var=len(upper), n_obj=loop.n_obj, n_ieq_constr=loop.n_constr + 1,
                   xl=np.zeros(len(upper)), xu=upper, vtype=int)


def pymoo_values(F: np.ndarray, G: np.ndarray):
    """(F, G) with unknown rows as infeasible (pymoo ranks infeasible ones by violation only)."""
    known = known_rows(F)
    F = np.where(known[:, None], F, 0.0)
    G = np.hstack([np.where(known[:, None], G, 0.0), np.where(known, -1.0, 1.0)[:, None]])
    return F, G


class NewToTheLoop(DefaultDuplicateElimination):
    """pymoo's duplicate elimination that also drops genomes the loop has already seen
    (once ``active``: the first population may be seeded with known ones)."""

    def __init__(self, loop: SearchLoop):
        super().__init__()
        self.loop = loop
        self.active = False

    def _do(self, pop, other, is_duplicate):
        is_duplicate = super()._do(pop, other, is_duplicate)
        if other is None and self.active:  # once per call: the population against itself, and the loop
            is_duplicate |= self.loop.seen(np.rint(pop.get("X")).astype(int))
        return is_duplicate


def best_known(loop: SearchLoop, problem: Problem, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` genomes of ``loop.history()`` chosen as NSGA-II's survival would choose them."""
    X, F, G = loop.history()
    if not len(X):
        return X
    pop = Population.new(X=X.astype(float))
    F, G = pymoo_values(F, G)
    PymooEvaluator().eval(StaticProblem(problem, F=F, G=G), pop)
    survivors = RankAndCrowding().do(problem, pop, n_survive=n, random_state=np.random.default_rng(seed))
    return np.rint(survivors.get("X")).astype(int)


def operators(cfg):
    c, m = cfg.crossover, cfg.mutation
    per_gene = {} if c.prob_var is None else {"prob_var": c.prob_var}  # SBX's default: 0.5
    return (SBX(prob=c.prob, eta=c.eta, vtype=float, repair=RoundingRepair(), **per_gene),
            PM(prob=m.prob, prob_var=m.prob_var, eta=m.eta, vtype=float, repair=RoundingRepair()))


class Nsga2:
    def __init__(self, cfg):
        self.cfg = cfg

    def run(self, loop: SearchLoop) -> None:
        cfg = self.cfg
        problem = genome_problem(loop)
        crossover, mutation = operators(cfg)
        rng = np.random.default_rng(cfg.seed + 1)
        known = best_known(loop, problem, cfg.population, cfg.seed)
        if len(known):  # seeded: the best known, then new random ones up to a population
            sampling = np.vstack([known, loop.sample_unseen(rng, cfg.population - len(known))]).astype(float)
        else:
            sampling = IntegerRandomSampling()
        dedup = NewToTheLoop(loop)
        algorithm = NSGA2(pop_size=cfg.population, sampling=sampling, crossover=crossover,
                          mutation=mutation, eliminate_duplicates=dedup)
        algorithm.setup(problem, seed=cfg.seed, termination=NoTermination())
        while not loop.exhausted:
            pop = algorithm.ask()
            X = np.rint(pop.get("X")).astype(int) if pop is not None and len(pop) else np.zeros((0, problem.n_var), int)
            short = cfg.population - len(X)
            if short > 0:  # mating ran out of new genomes (or the first population was seen): top up at random
                extra = loop.sample_unseen(rng, short)
                X = np.vstack([X, extra])
                pop = Population.new(X=X.astype(float))
            if not len(X):
                break
            used = loop.used
            F, G = pymoo_values(*loop.measure(X))
            PymooEvaluator().eval(StaticProblem(problem, F=F, G=G), pop)
            algorithm.tell(infills=pop)
            dedup.active = True
            if loop.used > used:  # a seeded first population may hold nothing new
                loop.end_generation()


@STRATEGIES.register("nsga2")
def nsga2(cfg) -> Nsga2:
    return Nsga2(cfg)
