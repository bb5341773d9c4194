"""Accuracy predictors on NAS-Bench-201: Kendall tau and RMSE against training-set size.

    python benchmarks/accuracy_predictors.py [--table ../shared/data/hwnas-bench/nb201.csv.gz]
        [--column cifar10_acc] [--sizes 100,500,1000] [--seeds 3] [--test 3000]

Each seed draws a training set and a disjoint test set of architectures; every model of
hwnas.predictors.ACCURACY_MODELS is fitted alone, and AccuracyPredictor (cross-validated
choice among them) beside them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from common import ROOT, write_section
from hwnas.predictors import ACCURACY_MODELS, AccuracyPredictor
from hwnas.tabular import TabularBenchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(ROOT.parent / "shared" / "data" / "hwnas-bench" / "nb201.csv.gz"))
    parser.add_argument("--column", default="cifar10_acc")
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test", type=int, default=3000)
    args = parser.parse_args()
    bench = TabularBenchmark.load("nb201", Path(args.table))
    y_all = bench.values(args.column)
    X_all = bench.features(bench.genomes)
    names = ["ridge", "random_forest", "gradient_boosting", "gaussian_process", "mlp", "cv-selected"]
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        taus, rmses, secs = {k: [] for k in names}, {k: [] for k in names}, {k: [] for k in names}
        for seed in range(args.seeds):
            order = np.random.default_rng(seed).permutation(len(y_all))
            tr, te = order[:n], order[n:n + args.test]
            for name in names:
                start = time.perf_counter()
                model = (AccuracyPredictor(random_state=seed) if name == "cv-selected"
                         else ACCURACY_MODELS.create(name, random_state=seed))
                pred = model.fit(X_all[tr], y_all[tr]).predict(X_all[te])
                secs[name].append(time.perf_counter() - start)
                taus[name].append(kendalltau(pred, y_all[te]).statistic)
                rmses[name].append(float(np.sqrt(np.mean((pred - y_all[te]) ** 2))))
        for name in names:
            rows.append(f"| {n} | {name} | {np.mean(taus[name]):.3f} ± {np.std(taus[name]):.3f} | "
                        f"{np.mean(rmses[name]):.2f} | {np.mean(secs[name]):.1f} |")
            print(rows[-1], flush=True)
    body = (f"NAS-Bench-201 `{args.column}` (percent), features `TabularBenchmark.features` (one-hot ops plus "
            f"structure); {args.seeds} seeds, each a random training set of n architectures and {args.test} "
            f"disjoint test architectures. `cv-selected` is `AccuracyPredictor` (5-fold CV choice by Kendall τ).\n\n"
            "| n train | model | Kendall τ (test) | RMSE (points) | fit + predict s |\n|---|---|---|---|---|\n"
            + "\n".join(rows))
    write_section("accuracy_predictors", "Accuracy predictors on NAS-Bench-201", body)


if __name__ == "__main__":
    main()
