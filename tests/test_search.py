"""Strategies on a problem with a known exhaustive front."""

import itertools

import numpy as np

from hwnas.search import STRATEGIES, ExperimentProblem, hv_ratio, nondominated, normalized_hypervolume

UPPER = np.array([4, 4, 4, 4, 4])


def objectives(G):
    # Two conflicting objectives over a 5^5 grid, with a budget: the sum of the first two genes <= 6.
    G = np.asarray(G, dtype=float)
    f1 = G.sum(axis=1)
    f2 = ((4 - G) ** 2).sum(axis=1) + 0.5 * G[:, 0] * G[:, 1]
    return np.stack([f1, f2], axis=1), (G[:, :1] + G[:, 1:2] - 6.0)


def problem(log):
    def evaluate(G, generation):
        log.append((generation, G.copy()))
        return objectives(G)
    return ExperimentProblem(UPPER, n_obj=2, n_constr=1, evaluate_batch=evaluate)


def true_front():
    grid = np.array(list(itertools.product(range(5), repeat=5)))
    F, G = objectives(grid)
    return F[(G <= 0).all(axis=1)]


def found(log):
    G = np.concatenate([g for _, g in log])
    F, C = objectives(G)
    return F[(C <= 0).all(axis=1)]


def test_nsga2_reaches_the_exhaustive_front():
    log = []
    STRATEGIES.create("nsga2", problem=problem(log), population=20, generations=25, seed=3)
    assert [g for g, _ in log] == list(range(1, 26))
    assert hv_ratio(found(log), true_front()) >= 0.95


def test_nsga2_beats_random_at_equal_budget_and_is_seeded():
    ratios = {}
    for name in ("nsga2", "random"):
        log = []
        STRATEGIES.create(name, problem=problem(log), population=10, generations=8, seed=1)
        ratios[name] = hv_ratio(found(log), true_front())
    assert ratios["nsga2"] > ratios["random"]
    a, b = [], []
    STRATEGIES.create("nsga2", problem=problem(a), population=10, generations=5, seed=7)
    STRATEGIES.create("nsga2", problem=problem(b), population=10, generations=5, seed=7)
    assert all((x == y).all() for (_, x), (_, y) in zip(a, b))


def test_hypervolume_basics():
    F = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert sorted(nondominated(F).tolist()) == [0, 1]
    hv = normalized_hypervolume(F[:2], ideal=np.zeros(2), nadir=np.ones(2))
    assert np.isclose(hv, 2 * 1.1 * 0.1 - 0.1 * 0.1)  # two 1.1 x 0.1 strips sharing a 0.1 x 0.1 corner
    assert hv_ratio(F[:2], F) == 1.0
