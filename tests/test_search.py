"""The search loop and every strategy on a problem with a known exhaustive front."""

import itertools

import numpy as np
import pytest

from hwnas.config import StrategyConfig
from hwnas.search import (STRATEGIES, SearchLoop, bounded_hypervolume, create_strategy, hv_ratio, nondominated,
                          normalized_hypervolume)
from hwnas.space import Choice, SearchSpace


def objectives(G):
    # Two conflicting objectives over a 5^5 grid, with a budget: the sum of the first two genes <= 6.
    G = np.asarray(G, dtype=float)
    f1 = G.sum(axis=1)
    f2 = ((4 - G) ** 2).sum(axis=1) + 0.5 * G[:, 0] * G[:, 1]
    return np.stack([f1, f2], axis=1), (G[:, :1] + G[:, 1:2] - 6.0)


class GridEvaluator:
    """The loop's evaluator on the grid; ``unknown`` genomes have no values, ``excluded`` ones are never measured."""

    n_obj, n_constr = 2, 1

    def __init__(self, n_var=5, options=5, unknown=(), excluded=()):
        self.space = SearchSpace([Choice(f"x{i}", tuple(range(options))) for i in range(n_var)])
        self.unknown, self.excluded_keys = set(unknown), set(excluded)
        self.calls = []  # every genome measured, in order

    def canonical(self, genomes):
        return genomes

    def excluded(self, genomes):
        return np.array([self.space.key(g) in self.excluded_keys for g in genomes], dtype=bool)

    def measure(self, genomes, generation):
        self.calls.extend(self.space.key(g) for g in genomes)
        F, G = objectives(genomes)
        bad = np.array([self.space.key(g) in self.unknown for g in genomes], dtype=bool)
        F[bad], G[bad] = np.nan, np.nan
        return F, G

    def features(self, genomes):
        return self.space.features(genomes)

    def warm(self):
        return np.zeros((0, self.space.n_var), int), np.zeros((0, 2)), np.zeros((0, 1))


def true_front():
    grid = np.array(list(itertools.product(range(5), repeat=5)))
    F, G = objectives(grid)
    return F[(G <= 0).all(axis=1)]


def found(evaluator, n=None):
    G = np.array([evaluator.space.from_key(k) for k in evaluator.calls[:n]])
    F, C = objectives(G)
    return F[(C <= 0).all(axis=1)]


def run(name, budget, seed=0, evaluator=None, **settings):
    evaluator = evaluator or GridEvaluator()
    loop = SearchLoop(evaluator, budget=budget, seed=seed)
    create_strategy(StrategyConfig(name=name, seed=seed, evaluations=budget, **settings)).run(loop)
    return evaluator, loop


STRATEGY_SETTINGS = [("nsga2", {}), ("random", {}), ("optuna", {"sampler": "tpe"}),
                     ("optuna", {"sampler": "nsga2"}), ("linas", {"linas_batch": 8})]


@pytest.mark.parametrize("name,settings", STRATEGY_SETTINGS)
def test_every_strategy_spends_exactly_its_budget_on_distinct_candidates(name, settings):
    evaluator, loop = run(name, 150, **settings)
    assert len(evaluator.calls) == len(set(evaluator.calls)) == loop.used == 150
    assert loop.exhausted


def test_strategies_are_registered():
    assert {"nsga2", "random", "optuna", "linas"} <= set(STRATEGIES.names())


@pytest.mark.parametrize("name,settings", [s for s in STRATEGY_SETTINGS if s[0] != "random"])
def test_guided_strategies_beat_random_and_approach_the_front(name, settings):
    ours = [hv_ratio(found(run(name, 200, seed=s, **settings)[0]), true_front()) for s in range(3)]
    rand = [hv_ratio(found(run("random", 200, seed=s)[0]), true_front()) for s in range(3)]
    assert np.median(ours) > np.median(rand)
    assert np.median(ours) >= 0.9


def test_seeded_runs_repeat():
    for name, settings in STRATEGY_SETTINGS:
        a, _ = run(name, 60, seed=7, **settings)
        b, _ = run(name, 60, seed=7, **settings)
        assert a.calls == b.calls, name


def test_a_small_space_is_exhausted_without_stalling():
    """27 candidates, budget 100: every strategy measures all 27 once and stops."""
    for name, settings in STRATEGY_SETTINGS:
        evaluator, loop = run(name, 100, evaluator=GridEvaluator(n_var=3, options=3), **settings)
        assert sorted(evaluator.calls) == sorted(set(evaluator.calls)) and len(evaluator.calls) == 27, name


def test_loop_answers_repeats_from_memory_and_reports_unknown_and_excluded():
    space_key = lambda g: "-".join(map(str, g))  # noqa: E731
    evaluator = GridEvaluator(unknown={space_key([1, 1, 1, 1, 1])}, excluded={space_key([2, 2, 2, 2, 2])})
    loop = SearchLoop(evaluator, budget=3)
    X = np.array([[0] * 5, [0] * 5, [1] * 5, [2] * 5, [3] * 5, [4] * 5])
    F, G = loop.measure(X)
    # [0]*5 twice is one candidate; [1]*5 is measured but unknown; [2]*5 excluded (not measured, not counted);
    # [3]*5 is the third and last of the budget; [4]*5 is past it.
    assert evaluator.calls == [space_key([0] * 5), space_key([1] * 5), space_key([3] * 5)]
    assert loop.used == 3 and loop.exhausted
    known = ~np.isnan(F).any(axis=1)
    assert known.tolist() == [True, True, False, False, True, False]
    np.testing.assert_array_equal(F[0], objectives(X[:1])[0][0])
    loop.budget = 10
    loop.measure(X)  # only [4]*5 is new: what is known is never measured again
    assert loop.used == 4 and evaluator.calls[3:] == [space_key([4] * 5)]
    assert len(loop.history()[0]) == 3  # the unknown one is not in the history


def test_warm_start_is_free_and_never_measured_again():
    class Warm(GridEvaluator):
        def warm(self):
            X = np.array(list(itertools.product(range(5), repeat=5)))[::50]
            F, G = objectives(X)
            return X, F, G

    evaluator = Warm()
    loop = SearchLoop(evaluator, budget=40)
    create_strategy(StrategyConfig(name="linas", evaluations=40, linas_batch=8)).run(loop)
    warm_keys = {evaluator.space.key(x) for x in evaluator.warm()[0]}
    assert loop.used == 40 and len(evaluator.calls) == 40 and not warm_keys & set(evaluator.calls)


class WarmFront(GridEvaluator):
    """Knows, before the run, a few true front members and many poor candidates."""

    def warm(self):
        grid = np.array(list(itertools.product(range(5), repeat=5)))
        F, G = objectives(grid)
        ok = np.flatnonzero((G <= 0).all(axis=1))
        X = grid[np.concatenate([ok[nondominated(F[ok])][::4], np.arange(0, len(grid), 97)])]
        return (X, *objectives(X))


def test_nsga2_starts_from_the_best_known_candidates():
    """Seeded with what the loop knows (a run's initial design), the first generation searches near its front."""
    seeded, cold = [], []
    for seed in range(3):
        evaluator, loop = run("nsga2", 20, seed=seed, evaluator=WarmFront(), population=10)
        warm_keys = {evaluator.space.key(x) for x in evaluator.warm()[0]}
        assert loop.used == 20 and not warm_keys & set(evaluator.calls)
        seeded.append(hv_ratio(found(evaluator), true_front()))
        cold.append(hv_ratio(found(run("nsga2", 20, seed=seed, population=10)[0]), true_front()))
    assert np.median(seeded) > np.median(cold) + 0.03  # measured: 0.916 vs 0.864


def test_predict_refits_on_what_was_measured():
    evaluator = GridEvaluator()
    loop = SearchLoop(evaluator, budget=120)
    X = loop.sample_unseen(np.random.default_rng(0), 120)
    loop.measure(X)
    test = loop.space.sample(np.random.default_rng(1), 300)
    F_pred, G_pred, F_std, _ = loop.predict(test, return_std=True)
    F_true = objectives(test)[0]
    assert F_pred.shape == (300, 2) and G_pred.shape == (300, 1) and (F_std >= 0).all()
    assert np.corrcoef(F_pred[:, 0], F_true[:, 0])[0, 1] > 0.8
    assert len(evaluator.calls) == 120  # predicting measured nothing


def test_hypervolume_basics():
    F = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert sorted(nondominated(F).tolist()) == [0, 1]
    hv = normalized_hypervolume(F[:2], ideal=np.zeros(2), nadir=np.ones(2))
    assert np.isclose(hv, 2 * 1.1 * 0.1 - 0.1 * 0.1)  # two 1.1 x 0.1 strips sharing a 0.1 x 0.1 corner
    assert hv_ratio(F[:2], F) == 1.0
    # fixed bounds: a fraction of the box, in [0, 1], points past a bound clipped to it
    assert bounded_hypervolume(np.array([[0.5, 0.5]]), np.zeros(2), np.ones(2)) == pytest.approx(0.25)
    assert bounded_hypervolume(np.array([[-3.0, -3.0]]), np.zeros(2), np.ones(2)) == 1.0
    assert bounded_hypervolume(np.array([[2.0, -1.0]]), np.zeros(2), np.ones(2)) == 0.0


def test_surrogate_fits_positive_columns_in_log_space():
    from hwnas.search.surrogate import Surrogate

    rng = np.random.default_rng(0)
    X = rng.random((200, 3))
    Y = np.stack([-X.sum(1), np.exp(3 * X[:, 0])], axis=1)  # a negated objective, a positive cost
    s = Surrogate().fit(X, Y)
    assert s.log_.tolist() == [False, True]
    mean, std = s.predict(X[:20], return_std=True)
    assert (mean[:, 1] > 0).all() and (std >= 0).all()
    assert np.corrcoef(mean[:, 1], Y[:20, 1])[0, 1] > 0.9  # back on the scale it was fitted on
