"""The search loop: what a strategy sees of a run.

A strategy is one object with ``run(loop)``. It *asks* the loop for values of genomes and is
*told* the result:

- ``loop.measure(genomes)`` evaluates them as the run says (measured metrics measured,
  predicted ones predicted) and returns ``(F, G)``: objectives to minimise (maximised ones
  negated) and budget slacks (feasible where ``<= 0``). A row of NaN is *unknown*: the value
  is missing (a table without it), the candidate is excluded (a degenerate cell) or the
  budget of evaluations ran out. Distinct candidates are counted once against
  ``strategy.evaluations``; asking again for one the loop has seen costs nothing.
- ``loop.predict(genomes)`` predicts ``(F, G)`` from a surrogate fitted on every candidate
  measured so far (refitted whenever that set grew); nothing is measured or counted.
- ``loop.history()`` is the store as the strategy sees it: every measured candidate, in
  order (``X``, ``F``, ``G``; unknown ones left out), what was known before it first.

``loop.end_generation()`` closes a batch (the run records it). The evaluator behind the loop
is what a run or a benchmark gives: see :class:`Evaluator`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Protocol, Tuple

import numpy as np

from hwnas.space import SearchSpace

Values = Tuple[np.ndarray, np.ndarray]


class Evaluator(Protocol):
    """What the loop needs from a run (``hwnas.pipeline.ExperimentEvaluator``) or a benchmark.

    ``measure`` gets distinct genomes the loop has not seen and returns their ``(F, G)``
    (NaN rows where unknown); ``excluded`` marks genomes never to be measured (degenerate
    ones); ``canonical`` maps genomes onto the space the evaluator answers for (a table that
    samples a space: its nearest row); ``features`` encodes genomes for the surrogate;
    ``warm`` gives ``(X, F, G)`` known before the strategy starts (a warm start, a run's initial
    design; free).
    """

    space: SearchSpace
    n_obj: int
    n_constr: int

    def canonical(self, genomes: np.ndarray) -> np.ndarray: ...

    def excluded(self, genomes: np.ndarray) -> np.ndarray: ...

    def measure(self, genomes: np.ndarray, generation: int) -> Values: ...

    def features(self, genomes: np.ndarray) -> np.ndarray: ...

    def warm(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def known_rows(F: np.ndarray) -> np.ndarray:
    """Rows whose values are known (not NaN)."""
    return ~np.isnan(F).any(axis=1)


class SearchLoop:
    def __init__(self, evaluator: Evaluator, budget: int, seed: int = 0, batch: int = 1,
                 on_generation: Optional[Callable[[int], None]] = None,
                 on_measured: Optional[Callable[[int], None]] = None, surrogate=None):
        self.evaluator = evaluator
        self.space: SearchSpace = evaluator.space
        self.n_obj, self.n_constr = evaluator.n_obj, evaluator.n_constr
        self.budget = int(budget)
        self.seed = seed
        self.batch = max(1, int(batch))  # how many candidates the evaluator measures side by side
        self.generation = 1
        self.on_generation, self.on_measured = on_generation, on_measured
        self.surrogate = surrogate
        self.used = 0  # distinct candidates evaluated in this run (warm-start ones are free)
        self._values: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self._order: list = []  # keys in the order they became known
        self._genomes: Dict[str, np.ndarray] = {}
        self._fitted_at = -1
        self._excluded: set = set()
        X, F, G = evaluator.warm()
        for x, f, g in zip(np.asarray(X, dtype=int).reshape(-1, self.space.n_var), F, G):
            self._remember(self.space.key(x), x, np.asarray(f, float), np.asarray(g, float))

    # --- what strategies read ---------------------------------------------------------------
    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.used)

    @property
    def exhausted(self) -> bool:
        """The budget is spent, or every candidate of the space has been seen."""
        return self.remaining == 0 or len(self._values) + len(self._excluded) >= self.space.size

    def seen(self, genomes) -> np.ndarray:
        """Per genome: the loop already knows it (measured, warm-started or excluded)."""
        G = self.evaluator.canonical(np.atleast_2d(np.asarray(genomes, dtype=int)))
        keys = [self.space.key(g) for g in G]
        return np.array([k in self._values or k in self._excluded for k in keys], dtype=bool)

    def history(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = [k for k in self._order if known_rows(self._values[k][0][None])[0]]
        X = np.array([self._genomes[k] for k in keys], dtype=int).reshape(len(keys), self.space.n_var)
        F = np.array([self._values[k][0] for k in keys], dtype=float).reshape(len(keys), self.n_obj)
        G = np.array([self._values[k][1] for k in keys], dtype=float).reshape(len(keys), self.n_constr)
        return X, F, G

    # --- asking ---------------------------------------------------------------------------------
    def measure(self, genomes) -> Values:
        """Values of each genome; new distinct ones are evaluated while the budget lasts."""
        genomes = self.evaluator.canonical(np.atleast_2d(np.asarray(genomes, dtype=int)))
        keys = [self.space.key(g) for g in genomes]
        new, new_keys = [], set()
        excluded = self.evaluator.excluded(genomes)
        for key, g, out in zip(keys, genomes, excluded):
            if out:
                self._excluded.add(key)
            elif key not in self._values and key not in new_keys and len(new) < self.remaining:
                new.append(g)
                new_keys.add(key)
        if new:
            F, G = self.evaluator.measure(np.array(new, dtype=int), self.generation)
            for g, f, c in zip(new, F, G):
                self._remember(self.space.key(g), g, np.asarray(f, float), np.asarray(c, float))
            self.used += len(new)
            if self.on_measured:
                self.on_measured(len(new))
        unknown = (np.full(self.n_obj, np.nan), np.full(self.n_constr, np.nan))
        rows = [self._values.get(k, unknown) for k in keys]
        return (np.array([r[0] for r in rows], float).reshape(len(keys), self.n_obj),
                np.array([r[1] for r in rows], float).reshape(len(keys), self.n_constr))

    def predict(self, genomes, return_std: bool = False):
        """Surrogate predictions of (F, G) (and their spreads with ``return_std``); the surrogate
        is refitted whenever the history has grown."""
        if self.surrogate is None:
            from .surrogate import Surrogate

            self.surrogate = Surrogate(random_state=self.seed)
        if self._fitted_at != len(self._order):
            X, F, G = self.history()
            if len(X) < 2:
                raise ValueError("predict needs at least 2 measured candidates")
            self.surrogate.fit(self.evaluator.features(X), np.hstack([F, G]))
            self._fitted_at = len(self._order)
        genomes = np.atleast_2d(np.asarray(genomes, dtype=int))
        out = self.surrogate.predict(self.evaluator.features(genomes), return_std=return_std)
        split = lambda Y: (Y[:, :self.n_obj], Y[:, self.n_obj:])  # noqa: E731
        return (*split(out[0]), *split(out[1])) if return_std else split(out)

    def end_generation(self) -> None:
        if self.on_generation:
            self.on_generation(self.generation)
        self.generation += 1

    def sample_unseen(self, rng: np.random.Generator, n: int, tries: int = 20) -> np.ndarray:
        """Up to ``n`` distinct random genomes the loop has not seen (fewer when the space runs out)."""
        out, keys = [], set()
        for _ in range(tries):
            if len(out) >= n:
                break
            G = self.evaluator.canonical(self.space.sample(rng, max(2 * (n - len(out)), 8)))
            for g, s in zip(G, self.seen(G) | self.evaluator.excluded(G)):
                k = self.space.key(g)
                if not s and k not in keys and len(out) < n:
                    out.append(g)
                    keys.add(k)
        return np.array(out, dtype=int).reshape(len(out), self.space.n_var)

    # --- internals --------------------------------------------------------------------------------
    def _remember(self, key: str, genome, F: np.ndarray, G: np.ndarray) -> None:
        if key not in self._values:
            self._order.append(key)
        self._values[key] = (F, G)
        self._genomes[key] = np.asarray(genome, dtype=int)
