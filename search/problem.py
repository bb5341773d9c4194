"""The search problem in pymoo's shape: genomes in, objectives (F) and constraints (G) out.

It knows nothing of supernets or stores: it calls ``evaluate_batch(genomes, generation)``,
which returns the effective objective matrix (to *minimise*) and the budget slacks
(feasible when ``<= 0``), as pymoo expects.
"""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np
from pymoo.core.problem import Problem

BatchEvaluator = Callable[[np.ndarray, int], Tuple[np.ndarray, np.ndarray]]


class ExperimentProblem(Problem):
    def __init__(self, upper: np.ndarray, n_obj: int, n_constr: int, evaluate_batch: BatchEvaluator):
        super().__init__(n_var=len(upper), n_obj=n_obj, n_ieq_constr=n_constr,
                         xl=np.zeros(len(upper)), xu=np.asarray(upper, dtype=float), vtype=int)
        self.evaluate_batch = evaluate_batch
        self.generation = 1  # the strategy advances it after each generation

    def _evaluate(self, X, out, *args, **kwargs):
        F, G = self.evaluate_batch(np.rint(X).astype(int), self.generation)
        out["F"] = F
        if self.n_ieq_constr:
            out["G"] = G
