"""Few-shot latency prediction benchmark (HELP's protocol) against FLOPs / layer-wise / non-meta baselines.

    python benchmarks/fewshot.py --table T.csv.gz --space nb201|fbnet|ofa_mbv3 \
        --meta-train-devices a,b,... --test-devices c,d,... --shots 10 --seeds 5 --json OUT.json

Per seed the predictor is meta-trained on HELP's pool (arch_idx < 900 NB201, < 4000
FBNet/OFA, 10th-90th latency percentile) of the meta-training devices, then adapted to
each test device from the shots (HELP's 10 reference architectures; fewer shots take the
first references, more add random pool architectures of the test device, drawn per seed);
the score is Spearman's rho on the test device's query set (the next 1000 arch_idx,
trimmed the same way). Only the columns named on the command line are read.

    python benchmarks/fewshot.py --throughput [--spaces nb201,fbnet,ofa_mbv3] [--n 100000]
        [--repeats 5] [--threads 2] [--json OUT.json]

measures predictions per second of the shipped predictors (``load_pretrained(space)``
adapted on the 10 reference architectures of a device) on random genomes, in one batch of
``n`` and in batches of 1000; best and median of ``repeats`` passes, with the load average.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from hwnas.errors import HwnasError
from hwnas.predictors.cost import FlopsPredictor, LayerwisePredictor, NonMetaPredictor
from hwnas.predictors.fewshot import FewShotPredictor, help_split
from hwnas.tabular import TabularBenchmark

# HELP's published figures (Lee et al., NeurIPS 2021; README of github.com/HayeonLee/HELP,
# Tables 3 and 2 of the paper), quoted for comparison only: mean Spearman rho over HELP's
# meta-TEST devices, none of which is in the hwnas-bench tables (so not the same devices).
PUBLISHED = {
    "nb201": {
        "HELP, 10 shots (mean of titan_rtx_256, gold_6226, pixel2, raspi4, eyeriss, fpga)": 0.932,
        "FLOPs (same 6 devices)": 0.787,
        "BRP-NAS, 900 samples (same 6 devices)": 0.789,
    },
    "fbnet": {
        "HELP, 10 shots (mean of raspi4, eyeriss, fpga)": 0.910,
        "Meta-SGD (same 3 devices)": 0.806,
        "MAML (same 3 devices)": 0.736,
    },
}
BASELINES = {"flops": FlopsPredictor, "layerwise": LayerwisePredictor, "non_meta": NonMetaPredictor}


def _device_list(text: str) -> list:
    return [d.strip() for d in text.split(",") if d.strip()]


def shot_rows(bench: TabularBenchmark, column: str, shots: int, rng: np.random.Generator) -> np.ndarray:
    refs = bench.rows_of_arch_idx(bench.reference_archs())
    if shots <= len(refs):
        return refs[:shots]
    pool = np.setdiff1d(help_split(bench, column)[0], refs)
    return np.concatenate([refs, rng.choice(pool, shots - len(refs), replace=False)])


def throughput(predictor: FewShotPredictor, n: int = 200_000, repeats: int = 3) -> dict:
    """Predictions per second on a batch of random genomes of the space: wall-clock, and per
    CPU-second of this process (the latter does not depend on other jobs on a shared CPU)."""
    G = predictor.tspace.space.sample(np.random.default_rng(0), n)
    wall, cpu = np.inf, np.inf
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        predictor.predict(G)
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return {"wall_clock": n / wall, "per_cpu_second": n / cpu}


def _adapted_pretrained(space: str, table: str | None, shots: int = 10):
    """``load_pretrained(space)`` adapted on the 10 reference archs of a device of the table
    (the first test-like device), or on their MACs when the table is absent; ``shots`` > 10 adds
    random pool architectures of that device (:func:`shot_rows`, seed 0)."""
    from hwnas.predictors.fewshot import load_pretrained

    predictor = load_pretrained(space)
    try:
        bench = TabularBenchmark.load(space, table)
        device = bench.devices[-1]
        rows = shot_rows(bench, bench.column_name(device), shots, np.random.default_rng(0))
        return predictor.adapt(bench.values(device)[rows], bench.genomes[rows]), f"{device} ({len(rows)} shots)"
    except HwnasError:
        device, values = "MACs of the reference archs", predictor.tspace.macs(predictor.reference_genomes_) / 1e6
    return predictor.adapt(values), device


def measure_throughput(predict, G: np.ndarray, batch: int, repeats: int) -> dict:
    """Best and median predictions/s over ``repeats`` passes of ``predict`` over ``G`` in batches."""
    import os

    predict(G[: min(batch, 1000)])  # warm-up (lazy tables, allocator)
    walls, cpus = [], []
    load = os.getloadavg()[0]
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for start in range(0, len(G), batch):
            predict(G[start : start + batch])
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    n = len(G)
    return {"batch": batch, "n": n, "repeats": repeats,
            "best_per_s": n / min(walls), "median_per_s": n / float(np.median(walls)),
            "per_cpu_second_best": n / min(cpus), "load_average_1min_before": load,
            "load_average_1min_after": os.getloadavg()[0]}


def run_throughput(args) -> dict:
    """Wall-clock prediction throughput of the shipped few-shot predictors (adapted on 10 shots)."""
    import torch

    out = {"n": args.n, "repeats": args.repeats, "spaces": {}}
    spaces = _device_list(args.spaces)
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        for space in spaces:
            table = args.table if args.space == space else None  # None: the shared data, if present
            adapted, device = _adapted_pretrained(space, table, args.shots)
            G = adapted.tspace.space.sample(np.random.default_rng(0), args.n)
            for batch in (args.n, 1000):
                r = measure_throughput(adapted.predict, G, batch, args.repeats)
                r.update(threads=threads, adapted_on=device, weights=adapted.weights_)
                out["spaces"].setdefault(space, []).append(r)
                print(f"{space:<9} threads {threads} batch {batch:>7}: best {r['best_per_s']:>12,.0f}/s  "
                      f"median {r['median_per_s']:>12,.0f}/s  ({r['per_cpu_second_best']:,.0f} per CPU-s; "
                      f"load {r['load_average_1min_before']:.1f})", flush=True)
    return out


def meta_trained(args, bench: TabularBenchmark, train: list, seed: int) -> FewShotPredictor:
    """Meta-train on ``train`` (seeded, so the same weights every time); with ``--meta-cache DIR`` the
    result is kept there and reused by later runs with the same space, devices, settings and seed."""
    predictor = FewShotPredictor.for_space(args.space, epochs=args.epochs, n_members=args.members, seed=seed,
                                           threads=args.threads)
    path = None
    if args.meta_cache:
        import hashlib

        key = json.dumps([bench.name, [bench.column_name(c) for c in train], predictor.get_params()], sort_keys=True)
        path = Path(args.meta_cache) / f"{bench.name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
        if path.is_file():
            cached = FewShotPredictor.load(path)
            cached.proxies = predictor.proxies
            return cached
    predictor.meta_fit(bench, train)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        predictor.save(path)
    return predictor


def run(args) -> dict:
    bench = TabularBenchmark.load(args.space, args.table)
    train, test = _device_list(args.meta_train_devices), _device_list(args.test_devices)
    if not train or not test:
        raise HwnasError("give at least one meta-train device and one test device")
    train_cols = [bench.column_name(d) for d in train]
    test_cols = [bench.column_name(d) for d in test]
    leaked = sorted(set(train_cols) & set(test_cols))
    if leaked:
        raise HwnasError(f"test devices are also meta-training devices: {', '.join(leaked)}")
    if args.shots < 2:
        raise HwnasError("--shots must be at least 2")

    G = bench.genomes
    queries = {}
    for d, c in zip(test, test_cols):
        queries[d] = help_split(bench, c)[1]
        if len(queries[d]) < 10:
            raise HwnasError(f"test device {d!r} has too few query architectures ({len(queries[d])})")

    rhos = {d: [] for d in test}
    resemblance = {d: [] for d in test}
    base_rhos = {name: {d: [] for d in test} for name in BASELINES}
    meta_seconds, last = [], None
    for seed in range(args.seeds):
        t = time.perf_counter()
        predictor = meta_trained(args, bench, train_cols, seed)
        meta_seconds.append(time.perf_counter() - t)
        rng = np.random.default_rng(seed)
        for d, c in zip(test, test_cols):
            values, q = bench.values(c), queries[d]
            shots = shot_rows(bench, c, args.shots, rng)
            last = predictor.adapt(values[shots], G[shots])
            rhos[d].append(spearmanr(last.predict(G[q]), values[q])[0])
            resemblance[d].append(last.resemblance_)
            # Baselines see the same shots; with fixed shots they are deterministic, so one run.
            if seed == 0 or args.shots > 10:
                for name, cls in BASELINES.items():
                    model = cls(bench.tspace).fit(G[shots], values[shots])
                    base_rhos[name][d].append(spearmanr(model.predict(G[q]), values[q])[0])
        print(f"seed {seed}: meta-training {meta_seconds[-1]:.1f} s, "
              f"mean rho {np.mean([rhos[d][-1] for d in test]):.4f}", file=sys.stderr, flush=True)

    def summary(per_device):
        out = {d: {"rho_mean": float(np.mean(r)), "rho_std": float(np.std(r))} for d, r in per_device.items()}
        return out, float(np.mean([v["rho_mean"] for v in out.values()]))

    per_device, mean_rho = summary(rhos)
    for d in test:  # how like the closest meta-training device the shots are (R^2, leave-one-out)
        per_device[d]["resemblance_mean"] = float(np.mean(resemblance[d]))
    baselines = {}
    for name in BASELINES:
        b_dev, b_mean = summary(base_rhos[name])
        baselines[name] = {"per_device": b_dev, "mean_rho": b_mean}
    return {
        "space": args.space,
        "table": str(Path(args.table).name),
        "meta_train_devices": train,
        "test_devices": test,
        "shots": args.shots,
        "seeds": args.seeds,
        "per_device": per_device,
        "mean_rho": mean_rho,
        "mean_rho_std_over_seeds": float(np.std([np.mean([rhos[d][s] for d in test]) for s in range(args.seeds)])),
        "baselines": baselines,
        "published": PUBLISHED.get(args.space, {}),
        "meta_train_seconds_mean": float(np.mean(meta_seconds)),
        "predictions_per_second": throughput(last),
        "settings": {k: v for k, v in predictor.get_params().items() if k != "seed"},
    }


# --------------------------------------------------------------------------- leave one group out
GROUPS = {
    "nb201": ("phones", "gpus", "cpus", "eagle"),
    "fbnet": ("phones", "gpus", "cpus"),
    "ofa_mbv3": ("2080ti", "titan_xp", "v100"),
}


def device_group(space: str, device: str) -> str:
    """Phones, GPUs, CPUs, the desktop Eagle pair (its own group); OFA's table has GPUs only: their family."""
    if space == "ofa_mbv3":
        return device.rsplit("_", 1)[0]
    if device.startswith("eagle"):
        return "eagle"
    if device.startswith(("samsung", "pixel", "essential")):
        return "phones"
    if device.startswith(("silver", "gold")):
        return "cpus"
    return "gpus"


def nearest_device(bench: TabularBenchmark, train: list, shots: np.ndarray, y: np.ndarray) -> str:
    """The meta-training device whose latencies on the shots rank them most like the target's."""
    def rho(d):
        v = bench.values(d)[shots]
        return spearmanr(v, y)[0] if np.isfinite(v).all() else -1.0
    return max(train, key=rho)


def pool_reference_rho(bench: TabularBenchmark, device: str) -> dict:
    """References, not few-shot methods: rho on the device's query set of a ridge (alpha by
    cross-validation) and of gradient boosting (a flexible model: interactions and saturation the
    ridge cannot fit) on the predictor's features, fitted on the device's whole HELP pool (about 700
    NB201, 3,000 FBNet/OFA architectures). Where both stay low, the table's latencies are mostly noise
    or ties at the query's resolution that these features do not explain."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV

    values = bench.values(device)
    pool, query = help_split(bench, device)
    X = bench.tspace.features(bench.genomes)
    models = {"pool_ridge": RidgeCV(alphas=np.logspace(-4, 3, 15)),
              "pool_boosting": HistGradientBoostingRegressor(max_iter=500, learning_rate=0.05, random_state=0)}
    return {name: float(spearmanr(m.fit(X[pool], values[pool]).predict(X[query]), values[query])[0])
            for name, m in models.items()}


def run_logo(args) -> dict:
    """Each group held out in turn: meta-train on the other groups, adapt to each held-out device from
    ``shots`` samples (HELP's 10 references, then random pool architectures), rho on its query set."""
    bench = TabularBenchmark.load(args.space, args.table)
    shot_counts = [int(s) for s in args.shot_counts.split(",")]
    groups = [g for g in GROUPS[args.space] if g in _device_list(args.groups or ",".join(GROUPS[args.space]))]
    from common import command, machine

    G = bench.genomes
    out = {"space": args.space, "shots": shot_counts, "seeds": args.seeds, "command": command(), "machine": machine(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "groups": {}}
    for group in groups:
        test = [d for d in bench.devices if device_group(args.space, d) == group]
        train = [d for d in bench.devices if device_group(args.space, d) != group]
        per = {d: {n: {k: [] for k in ("ours", "expected", "resemblance", "flops", "layerwise", "nearest", "non_meta")}
                   for n in shot_counts} for d in test}
        ceiling = {d: pool_reference_rho(bench, d) for d in test}
        for seed in range(args.seeds):
            t = time.perf_counter()
            meta = meta_trained(args, bench, train, seed)
            seconds = time.perf_counter() - t
            for d in test:
                values, q = bench.values(d), help_split(bench, d)[1]
                for n in shot_counts:
                    shots = shot_rows(bench, bench.column_name(d), n, np.random.default_rng(seed))
                    y = values[shots]
                    cell = per[d][n]
                    adapted = meta.adapt(y, G[shots])
                    cell["ours"].append(spearmanr(adapted.predict(G[q]), values[q])[0])
                    cell["expected"].append(adapted.expected_rho())
                    cell["resemblance"].append(adapted.resemblance_)
                    for name, cls in BASELINES.items():
                        cell[name].append(spearmanr(cls(bench.tspace).fit(G[shots], y).predict(G[q]), values[q])[0])
                    near = bench.values(nearest_device(bench, train, shots, y))[q]
                    cell["nearest"].append(spearmanr(near, values[q], nan_policy="omit")[0])
            print(f"{args.space} hold out {group} seed {seed}: meta-training {seconds:.0f} s; "
                  + "; ".join(f"{d} " + " ".join(f"{n}:{per[d][n]['ours'][-1]:.3f}" for n in shot_counts)
                              for d in test), file=sys.stderr, flush=True)
        out["groups"][group] = {"meta_train_devices": train, "per_device": {
            d: {**{str(n): {k: float(np.mean(v)) for k, v in cells.items()} for n, cells in by_n.items()},
                **ceiling[d]}
            for d, by_n in per.items()}}
    return out


LOGO_INTRO = """Each device group of a table is held out in turn (phones; GPUs; CPUs; the desktop Eagle pair, a
group of its own; OFA's table holds GPUs only, so its groups are the three GPU families); the
predictor is meta-trained on the other groups' devices (HELP's pool, 10th-90th percentile), adapted to
each held-out device from its shots (HELP's 10 reference architectures, then random pool
architectures of that device), and scored by Spearman rho on the device's query set (HELP's). The
baselines see the same shots: FLOPs (MACs, linear), layer-wise (ridge per-(layer, option) table),
nearest device (the meta-training device whose latencies rank the shots most alike: its measured
latencies, read from the table), non-meta GP on the same features. "expected (model)" is what the
adapted model itself expects (`FewShotPredictor.expected_rho`, over random architectures of the
space, not the trimmed query set). "ours at 50" is the same device with 50 shots. "whole-pool ridge" and
"whole-pool boosting" are references, not baselines: a ridge and gradient boosting (scikit-learn's
HistGradientBoostingRegressor, 500 rounds, learning rate 0.05) on the same features fitted on all of the
device's pool architectures (about 700 NB201, 3,000 FBNet/OFA); where both are low (phones with
whole-millisecond latencies, OFA's batch-1 GPUs) much of the query's ranking is ties and noise that
these features do not explain (they are not upper bounds, but what a model fitted on 60-300 times the
shots reaches)."""


def logo_markdown(results: list) -> str:
    """Per device at 10 shots beside the baselines; the rho-vs-shots curve of the held-out means."""
    lines = []
    names = ["flops", "layerwise", "nearest", "non_meta"]
    for r in results:
        ten = "10" if 10 in r["shots"] else str(r["shots"][0])
        lines += [f"### {r['space']}: leave one group out, {ten} shots, {r['seeds']} seed(s) (run {r.get('date', '?')})", "",
                  "| held out | device | ours | expected (model) | FLOPs | layer-wise | nearest device | non-meta GP | ours ≥ best baseline | ours at 50 | whole-pool ridge | whole-pool boosting |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        rows, ceilings = [], []
        for group, g in r["groups"].items():
            for d, by_n in g["per_device"].items():
                c = by_n[ten]
                best = max(c[n] for n in names)
                rows.append((c["ours"], best))
                cells = " | ".join(f"{c[n]:.3f}" for n in names)
                verdict = "yes" if c["ours"] >= best - 1e-9 else f"no ({c['ours'] - best:+.3f})"
                fifty = f"{by_n['50']['ours']:.3f}" if "50" in by_n else "–"
                refs = [by_n.get(k) for k in ("pool_ridge", "pool_boosting")]
                ceilings.append(refs)
                lines.append(f"| {group} | {d} | **{c['ours']:.3f}** | {c['expected']:.3f} | {cells} | {verdict} | {fifty} | "
                             + " | ".join(f"{x:.3f}" if x is not None else "–" for x in refs) + " |")
        ours = np.array([a for a, _ in rows])
        best = np.array([b for _, b in rows])
        lines += ["", f"Mean over the {len(rows)} held-out devices: ours **{ours.mean():.3f}**, best baseline per device "
                  f"{best.mean():.3f}; ours ≥ the best baseline on {int((ours >= best - 1e-9).sum())} of {len(rows)}"
                  + (f"; the whole-pool references (fitted on each device's ~{'700' if r['space'] == 'nb201' else '3,000'} "
                     f"pool architectures, not few-shot methods): ridge {np.mean([a for a, _ in ceilings]):.3f}, boosting "
                     f"{np.mean([b for _, b in ceilings]):.3f}, the better of the two per device "
                     f"{np.mean([max(a, b) for a, b in ceilings]):.3f}" if all(None not in x for x in ceilings) else "")
                  + ".", ""]
        lines += ["Mean ρ over the held-out devices by number of shots:", "",
                  "| shots | ours | FLOPs | layer-wise | nearest device | non-meta GP | ours ≥ best baseline |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for n in r["shots"]:
            devs = [by_n[str(n)] for g in r["groups"].values() for by_n in g["per_device"].values()]
            cells = [np.mean([c[k] for c in devs]) for k in ["ours"] + names]
            wins = sum(c["ours"] >= max(c[k] for k in names) - 1e-9 for c in devs)
            lines.append(f"| {n} | **{cells[0]:.3f}** | " + " | ".join(f"{c:.3f}" for c in cells[1:])
                         + f" | {wins} of {len(devs)} |")
        lines.append("")
    return "\n".join(lines)


def print_table(result: dict) -> None:
    names = list(BASELINES)
    print(f"\nFew-shot latency prediction, {result['space']}, {result['shots']} shots, "
          f"{result['seeds']} seeds - Spearman rho on the query set")
    print(f"{'device':<34}{'ours':>16}" + "".join(f"{n:>11}" for n in names))
    for d, r in result["per_device"].items():
        cells = "".join(f"{result['baselines'][n]['per_device'][d]['rho_mean']:>11.3f}" for n in names)
        print(f"{d:<34}{r['rho_mean']:>9.3f} ±{r['rho_std']:.3f}{cells}")
    cells = "".join(f"{result['baselines'][n]['mean_rho']:>11.3f}" for n in names)
    print(f"{'mean':<34}{result['mean_rho']:>9.3f} ±{result['mean_rho_std_over_seeds']:.3f}{cells}")
    for label, value in result["published"].items():
        print(f"  published: {label}: {value}")
    print(f"meta-training {result['meta_train_seconds_mean']:.1f} s/seed; "
          f"inference {result['predictions_per_second']['wall_clock']:,.0f} predictions/s wall-clock, "
          f"{result['predictions_per_second']['per_cpu_second']:,.0f} per CPU-second")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", help="benchmark CSV (.csv or .csv.gz)")
    parser.add_argument("--space", choices=["nb201", "fbnet", "ofa_mbv3"])
    parser.add_argument("--meta-train-devices", help="comma-separated device names")
    parser.add_argument("--test-devices", help="comma-separated device names")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--epochs", type=int, default=None, help="meta-training epochs (default: per space)")
    parser.add_argument("--members", type=int, default=None, help="ensemble members per seed (default: per space)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--meta-cache", help="folder to keep meta-trained predictors in and reuse them from "
                        "(keyed by space, devices, settings and seed)")
    lg = parser.add_argument_group("leave-one-group-out mode")
    lg.add_argument("--logo", action="store_true", help="hold out each device group of --space in turn")
    lg.add_argument("--groups", help="comma-separated subset of the groups (default: all)")
    lg.add_argument("--shot-counts", default="10,20,50,100")
    lg.add_argument("--merge", help="comma-separated JSON results of --logo runs: report them together in "
                    "BENCHMARKS.md (benchmarks/results/fewshot_logo.md)")
    lg.add_argument("--note", help="with --merge: a paragraph to add (e.g. which commit the runs used)")
    tp = parser.add_argument_group("throughput mode (no meta-training; the shipped predictors)")
    tp.add_argument("--throughput", action="store_true",
                    help="measure predictions/s of load_pretrained(space).adapt(10 shots).predict instead")
    tp.add_argument("--spaces", default="nb201,fbnet,ofa_mbv3")
    tp.add_argument("--n", type=int, default=100_000, help="genomes per pass")
    tp.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.logo:
        if args.merge:
            results = []
            for f in _device_list(args.merge):
                r = json.loads(Path(f).read_text())
                table = {"ofa_mbv3": "ofa"}.get(r["space"], r["space"])
                r.setdefault("command", f"python benchmarks/fewshot.py --logo --space {r['space']} --table "
                             f"../shared/data/hwnas-bench/{table}.csv.gz --seeds {r['seeds']} --json {f}")
                r.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(Path(f).stat().st_mtime)))
                results.append(r)
        else:
            if not args.space:
                parser.error("--logo needs --space")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results = [run_logo(args)]
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(results[0], indent=2))
        text = logo_markdown(results)
        print(text)
        if args.merge:
            from common import write_section

            runs = "\n".join(f"    {r['command']}   # {r['date']}" for r in results)
            write_section("fewshot_logo", "Few-shot latency prediction: leave one device group out", (
                LOGO_INTRO + (f"\n\n{args.note}" if args.note else "")
                + f"\n\nThe runs (one JSON each; then this command merges them):\n\n{runs}\n\n" + text))
        return 0
    if args.throughput:
        result = run_throughput(args)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    missing = [f"--{k.replace('_', '-')}" for k in ("table", "space", "meta_train_devices", "test_devices")
               if getattr(args, k) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GP baseline convergence chatter
            result = run(args)
    except HwnasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_table(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
