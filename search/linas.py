"""``linas``: NSGA-II on the loop's predictions, measure the most promising distinct batch, refit, repeat.

After an initial design (the space's ``ends()``: smallest and largest genomes, and in a joint space the smallest
architecture compressed uniformly; then random ones: ``linas_initial``), every round
runs NSGA-II for ``linas_generations`` generations of ``linas_population`` on ``loop.predict``
(the surrogate, refitted on everything measured so far), its parents the best measured
candidates (by their measured values) and the population carried over from the last round.
Of the distinct unseen candidates it visited, and every one-gene neighbour of the measured
front, it measures a batch (``linas_batch``, at least a tenth of what is measured so far):
two objectives, greedy hypervolume improvement over the measured front of the optimistic
prediction (mean - ``linas_optimism`` x the trees' spread); then, and with more objectives,
NSGA-II's order of the predictions ranked together with the measured front. A batch short of
new candidates is topped up at random, so the search never stalls on repeats. The budget
counts only what is measured; screening is free.

The NSGA-II here is pymoo's operators (SBX, polynomial mutation, the ``strategy.crossover`` /
``mutation`` settings; non-dominated sorting; crowding distance) on plain arrays: pymoo's
algorithm object keeps one Python object per individual, which costs more than predicting
them, and a round runs thousands of individuals.

Measured on the NB201 search benchmark (8 device columns; mean of the per-device median HV ratio
at 100 / 300 measurements, 10 seeds; these defaults 0.964 / 0.991 on seeds 0-9 and 0.961 / 0.988
on seeds 10-19, so about +-0.003 is noise) and not adopted, none clearly better: a random start of
10, 15, 30 or 40 (30: +0.001 at 100 and +0.001 / +0.002 at 300 on the two seed sets); batches of
5; 12 generations; optimism 0 (0.950) or 1; 500 or 2000 random candidates added to the pool;
scaling by the measured front's range; a maximin start in feature space; half the batch at
optimism 2; two random front neighbours per batch; Monte Carlo expected hypervolume improvement
(16 Gaussian samples, a front per sample); and for the surrogate (``surrogate.py``) linear weights
0.15 / 0.5, per-output weights chosen by out-of-bag error, a forest on the ridge's residuals, 64
trees, a Gaussian process, and NB201 path-encoding features (0.954). Even adding the identity cell
(only the input-output skip) to the start: 0.962 / 0.990. The random start stratified by the space's
MACs: 0.964 / 0.963 at 100; ends by MACs (the least-MACs connected cell, all-conv3x3) in place of
the all-``none`` and all-pooling cells: 0.954 / 0.979.
About 40 % of what is lost at 100 lies in the fastest tenth of the front's latency range: after 40
measurements, mostly slower cells, the surrogate predicts the five fastest front cells 1.5x too
slow (median; quartiles 1.3x and 1.9x over devices and seeds).
"""

from __future__ import annotations

import numpy as np
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from .base import STRATEGIES
from .hypervolume import nondominated
from .loop import SearchLoop
from .nsga2 import genome_problem, operators


def rank_and_crowding(F: np.ndarray, G: np.ndarray):
    """NSGA-II's order: feasible by non-dominated rank, then crowding; infeasible after, least violation first."""
    cv = np.clip(G, 0, None).sum(axis=1) if G.shape[1] else np.zeros(len(F))
    rank, crowd = np.full(len(F), len(F), dtype=float), np.zeros(len(F))
    feasible = np.where(cv <= 0)[0]
    if len(feasible):
        for r, front in enumerate(NonDominatedSorting().do(F[feasible])):
            idx = feasible[front]
            rank[idx] = r
            crowd[idx] = calc_crowding_distance(F[idx]) if len(idx) > 2 else np.inf
    infeasible = cv > 0
    rank[infeasible] += cv[infeasible]  # behind every feasible rank, ordered by violation
    return rank, crowd


def best_first(F: np.ndarray, G: np.ndarray) -> np.ndarray:
    rank, crowd = rank_and_crowding(F, G)
    return np.lexsort((-crowd, rank))


def hv_improvement_2d(front: np.ndarray, C: np.ndarray, ref: float = 1.1) -> np.ndarray:
    """Hypervolume each candidate row of C (2 objectives, normalised, minimised) adds to ``front``.

    The front's dominated region is a staircase: between consecutive first objectives its height
    is the best second objective so far; a candidate adds, per step right of it, the part of the
    step above it. Vectorised over candidates and steps.
    """
    front = front[(front < ref).all(axis=1)]
    t = np.concatenate([np.sort(front[:, 0]), [ref]]) if len(front) else np.array([ref])
    order = np.argsort(front[:, 0]) if len(front) else np.zeros(0, int)
    height = np.minimum.accumulate(front[order, 1]) if len(front) else np.zeros(0)
    left = np.concatenate([[-np.inf], t[:-1]])  # step k spans [left_k, t_k): height ref before the first point
    h = np.concatenate([[ref], height])
    x, y = C[:, :1], C[:, 1:2]
    width = np.clip(t[None, :] - np.maximum(left[None, :], x), 0, None)
    return (width * np.clip(h[None, :] - y, 0, None)).sum(axis=1) * ((C < ref).all(axis=1))


def pick_batch(F_cand: np.ndarray, G_cand: np.ndarray, F_front: np.ndarray, n: int,
               bounds: tuple = None) -> np.ndarray:
    """Indices of the ``n`` most promising candidates by predicted (F, G) against the measured front.

    Two objectives: greedy hypervolume improvement (objectives normalised by ``bounds``, the
    range of everything measured, so that extending the front past its ends counts; reference
    1.1), each pick added to the front before the next; candidates that improve nothing (and
    more objectives) in NSGA-II's order after.
    """
    picked: list = []
    feasible = (G_cand <= 0).all(axis=1)
    if F_cand.shape[1] == 2 and len(F_front) and feasible.any():
        ideal, nadir = bounds if bounds is not None else (F_front.min(axis=0), F_front.max(axis=0))
        span = np.where(nadir > ideal, nadir - ideal, 1.0)
        front, C = (F_front - ideal) / span, (F_cand - ideal) / span
        gain = np.where(feasible, 0.0, -1.0)
        while len(picked) < n:
            gain = np.where(gain < 0, gain, hv_improvement_2d(front, C))
            gain[picked] = -1.0
            best = int(np.argmax(gain))
            if gain[best] <= 0:
                break
            picked.append(best)
            front = np.vstack([front, C[best]])
    F = np.vstack([F_front, F_cand])
    G = np.vstack([np.zeros((len(F_front), G_cand.shape[1])), G_cand])
    order = best_first(F, G)
    rest = [i for i in order[order >= len(F_front)] - len(F_front) if i not in set(picked)]
    return np.array(picked + rest, dtype=int)[:n]


def neighbours(X: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Every genome one gene away from a row of X."""
    out = []
    for j, u in enumerate(upper):
        for v in range(int(u) + 1):
            Y = X[X[:, j] != v].copy()
            Y[:, j] = v
            out.append(Y)
    return np.vstack(out) if out else X[:0]


class Linas:
    def __init__(self, cfg):
        self.cfg = cfg

    def _offspring(self, problem, X, rank, crowd, rng):
        """Binary tournament, SBX and polynomial mutation (pymoo's), rounded to genes."""
        cfg = self.cfg
        n = len(X) + len(X) % 2  # in pairs
        a, b = rng.integers(len(X), size=(2, n))
        better = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (crowd[a] >= crowd[b]))
        parents = np.where(better, a, b).reshape(2, -1)
        P = X[parents].astype(float)
        Q = self.crossover._do(problem, P, random_state=rng)
        keep = rng.random(P.shape[1]) >= cfg.crossover.prob  # no crossover: the parents themselves
        Q[:, keep] = P[:, keep]
        Q = Q.reshape(-1, X.shape[1])
        mutate = rng.random(len(Q)) < cfg.mutation.prob
        if mutate.any():
            Q[mutate] = self.mutation._do(problem, Q[mutate], random_state=rng)
        return np.clip(np.rint(Q), 0, problem.xu).astype(int)

    def run(self, loop: SearchLoop) -> None:
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        problem = genome_problem(loop)
        self.crossover, self.mutation = operators(cfg)
        n_init = min(cfg.linas_initial, max(8, loop.budget // 5))
        have = len(loop.history()[0])
        if have < n_init:
            # The extremes first: a surrogate does not extrapolate beyond what it saw (forests not at all).
            ends = np.array(loop.space.ends())
            ends = ends[~loop.seen(ends)]
            X = np.vstack([ends, loop.sample_unseen(rng, n_init - have)])
            first = np.sort(np.unique(X, axis=0, return_index=True)[1])  # distinct, the ends first
            loop.measure(X[first][: loop.remaining])
            loop.end_generation()
        size = cfg.linas_population + cfg.linas_population % 2  # mating pairs
        carried = loop.space.sample(rng, size)
        while not loop.exhausted:
            X_hist, F_hist, G_hist = loop.history()
            front = X_hist[nondominated(F_hist)] if len(X_hist) else X_hist
            # Parents: the best measured candidates (their measured values), then the carried population.
            best = best_first(F_hist, G_hist)[:size]
            carried = carried[~loop.seen(carried)][: size - len(best)]
            Fc, Gc = loop.predict(carried) if len(carried) else (F_hist[:0], G_hist[:0])
            X = np.vstack([X_hist[best], carried])
            F, G = np.vstack([F_hist[best], Fc]), np.vstack([G_hist[best], Gc])
            visited = [carried]
            for _ in range(cfg.linas_generations):
                rank, crowd = rank_and_crowding(F, G)
                Q = self._offspring(problem, X, rank, crowd, rng)
                Fq, Gq = loop.predict(Q)
                visited.append(Q)
                X, F, G = np.vstack([X, Q]), np.vstack([F, Fq]), np.vstack([G, Gq])
                X, first = np.unique(X, axis=0, return_index=True)
                F, G = F[first], G[first]
                keep = best_first(F, G)[:size]
                X, F, G = X[keep], F[keep], G[keep]
            carried = X
            # The pool: what the search on the predictions visited, and every one-gene neighbour
            # of the measured front (the true front is mostly a step away from the measured one).
            pool = np.unique(np.vstack(visited + [neighbours(front, loop.space.upper)]), axis=0)
            pool = pool[~loop.seen(pool)]
            n = min(max(cfg.linas_batch, loop.used // 10), loop.remaining)
            batch = pool[:0]
            if len(pool):
                # Optimistic by the trees' spread: where the surrogate is unsure, it may be better than it says.
                Fp, Gp, Fs, Gs = loop.predict(pool, return_std=True)
                Fp, Gp = Fp - cfg.linas_optimism * Fs, Gp - cfg.linas_optimism * Gs
                F_front = F_hist[nondominated(F_hist)] if len(F_hist) else F_hist.reshape(0, loop.n_obj)
                bounds = (F_hist.min(axis=0), F_hist.max(axis=0)) if len(F_hist) else None
                batch = pool[pick_batch(Fp, Gp, F_front, n, bounds)]
            if len(batch) < n:  # top up: never stall on candidates already measured
                extra = loop.sample_unseen(rng, n - len(batch))
                batch = np.vstack([batch, extra]) if len(batch) else extra
            if not len(batch):
                break
            loop.measure(batch)
            loop.end_generation()


@STRATEGIES.register("linas")
def linas(cfg) -> Linas:
    return Linas(cfg)
