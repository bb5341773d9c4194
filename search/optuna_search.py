"""``optuna``: optuna's samplers (``strategy.sampler``: tpe, nsga2, gp, random) through ask-and-tell.

Each gene is a parameter (an integer index where the options are numbers, so TPE and GP see
their order; a category otherwise). Budgets are optuna constraints (the slacks, feasible
when ``<= 0``, as optuna expects), unknown values a failed trial. Candidates the loop knows
(a warm start) enter the study as finished trials first; a trial that proposes one the loop
has seen is told its stored values and costs nothing. ``loop.batch`` trials are asked
before they are measured together (constant liar for TPE).
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from .base import STRATEGIES
from .loop import SearchLoop, known_rows

SAMPLERS = ("tpe", "nsga2", "gp", "random")


def _constraints(g) -> dict:
    """Budget slacks as optuna constraints (``Trial.set_constraint``; feasible when <= 0)."""
    return {f"budget_{i}": float(v) for i, v in enumerate(g)}


def make_sampler(name: str, seed: int, population: int):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown optuna sampler {name!r}; allowed: {', '.join(SAMPLERS)}")


class OptunaSearch:
    def __init__(self, cfg):
        self.cfg = cfg

    def run(self, loop: SearchLoop) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        cfg, space = self.cfg, loop.space
        names = [v.name for v in space.variables]
        dists = {v.name: (IntDistribution(0, len(v.options) - 1)
                          if all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in v.options)
                          else CategoricalDistribution(list(range(len(v.options))))) for v in space.variables}
        study = optuna.create_study(directions=["minimize"] * loop.n_obj,
                                    sampler=make_sampler(cfg.sampler, cfg.seed, cfg.population))
        X, F, G = loop.history()
        study.add_trials([create_trial(params=dict(zip(names, map(int, x))), distributions=dists,
                                       values=f.tolist(), constraints=_constraints(g) or None)
                          for x, f, g in zip(X, F, G)])
        idle, max_idle = 0, max(200, 10 * cfg.population)
        generation_start = loop.used  # a generation: every `population` new candidates
        while not loop.exhausted and idle < max_idle:
            trials = [study.ask(dists) for _ in range(min(loop.batch, loop.remaining))]
            genomes = np.array([[t.params[n] for n in names] for t in trials], dtype=int)
            before = loop.used
            F, G = loop.measure(genomes)
            idle = 0 if loop.used > before else idle + len(trials)
            for trial, f, g, ok in zip(trials, F, G, known_rows(F)):
                if ok:
                    for key, value in _constraints(g).items():
                        trial.set_constraint(key, value)
                    study.tell(trial, f.tolist())
                else:
                    study.tell(trial, state=TrialState.FAIL)
            if loop.used - generation_start >= cfg.population or (loop.exhausted and loop.used > generation_start):
                loop.end_generation()
                generation_start = loop.used


@STRATEGIES.register("optuna")
def optuna_search(cfg) -> OptunaSearch:
    return OptunaSearch(cfg)
