"""Device cost models: the lookup table on this CPU (share within +-10 %) and `add`+`predict` on NB201.

    python benchmarks/devices_lut.py [--parts lut,tabular,compressed] [--runs 1] [--n 50] [--batch-size 32]
                                     [--threads 1] [--seed 1] [--clock cpu|wall] [--statistic min|median]
                                     [--keep 0.5,0.75,1.0] [--dump FILE]

``compressed`` (issue 18): ``hwnas devices measure local-cpu --space elastic_mbv3 --backend onnxruntime-cpu
--dimensions pruning,quantization`` (keep ratios ``--keep``, precisions int8/fp32) into a temporary
registry, timing how long it takes; then ``--n`` random compressed candidates of the joint space (keep
ratios per stage and precisions per unit drawn at random, none among the calibration samples) are
built as the search measures them (pruned layers, int8 units as onnxruntime QDQ) and timed whole on
onnxruntime-cpu, and compared with the device's compressed cost model, re-anchored as a run does (the
profile's 10 first calibration sub-networks timed again just before). Written to
``results/devices_compressed.md``.

``lut``: runs ``hwnas devices measure local-cpu --space elastic_mbv3`` (torch-cpu) into a temporary
registry, then measures ``--n`` random sub-networks of the shipped default supernet whole
with the same backend and compares them with the device's cost model
(:func:`hwnas.devices.predictors.cost_model`). Everything happens in one run, so the
timing conditions (a CPU shared with other jobs) are the same for the table and the
check; the timing noise (IQR / median) is reported next to the errors. While the
default checkpoint is not shipped yet, a freshly built supernet of the same shape is
used (latency does not depend on the weights).

``tabular`` (needs the shared tables and the shipped few-shot predictor): for HELP's NB201
meta-validation devices, ``hwnas devices add`` from the device's 10 reference samples, then
``hwnas devices predict`` on HELP's query set; Spearman rho next to the few-shot benchmark's
(``benchmarks/results/fewshot_nb201_help.json``, whose predictor was meta-trained without
those devices; the shipped predictor saw every table device, so it may score higher).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py, run as a script


def space_spec(tmp: Path) -> tuple:
    from hwnas import supernets
    from hwnas.errors import HwnasError

    reason = "default checkpoint not shipped yet"
    if supernets.DEFAULT_CHECKPOINT.is_file():
        try:
            supernets.load_default()
            return "elastic_mbv3", "shipped default checkpoint"
        except HwnasError as err:
            reason = f"default checkpoint unreadable: {str(err).split(':')[-1].strip()[:80]}"
    path = supernets.save_checkpoint(supernets.create("elastic_mbv3"), tmp / "elastic_mbv3.pt")
    return f"elastic_mbv3:{path}", f"a fresh elastic_mbv3 of the default shape ({reason})"


def tabular_section(args) -> str:
    import csv
    import json

    from hwnas.cli import main as hwnas_main
    from hwnas.devices.registry import get_device
    from hwnas.predictors.fewshot import help_split
    from hwnas.tabular import TabularBenchmark

    reference = json.loads((ROOT / "benchmarks" / "results" / "fewshot_nb201_help.json").read_text())
    bench = TabularBenchmark.load("nb201")
    lines = ["| device | rho via `hwnas devices add` + `predict` | few-shot benchmark rho (device held out) |",
             "| --- | --- | --- |"]
    rhos = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for device in reference["test_devices"]:
            shipped = get_device(device).samples("nb201")
            with open(tmp / "samples.csv", "w", newline="") as f:
                csv.writer(f).writerows([["arch", "latency_ms"]] + list(zip(shipped.archs, shipped.values["latency_ms"])))
            query = help_split(bench, device)[1]
            with open(tmp / "archs.csv", "w", newline="") as f:
                csv.writer(f).writerows([["arch"]] + [[bench.arch_ids[i]] for i in query])
            for cmd in (["add", f"my-{device}", "--space", "nb201", "--samples", str(tmp / "samples.csv")],
                        ["predict", f"my-{device}", "--space", "nb201", "--archs", str(tmp / "archs.csv"),
                         "--out", str(tmp / "pred.csv")]):
                if hwnas_main(["devices", *cmd, "--home", str(tmp / "devices")]):
                    raise SystemExit(f"hwnas devices {cmd[0]} failed")
            with open(tmp / "pred.csv") as f:
                predicted = [float(r["latency_ms"]) for r in csv.DictReader(f)]
            rho = float(spearmanr(predicted, bench.values(device)[query])[0])
            rhos.append(rho)
            lines.append(f"| {device} | {rho:.3f} | {reference['per_device'][device]['rho_mean']:.3f} |")
    lines.append(f"| mean | {np.mean(rhos):.3f} | {reference['mean_rho']:.3f} |")
    body = ("NB201, 10 shots = the device's reference samples of its shipped profile, HELP's query set "
            "(next 1000 arch_idx, 10th-90th percentile).\n\n" + "\n".join(lines) + "\n")
    return "devices_add", "Device add + predict on NB201 (few-shot cost model)", body


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="lut,tabular", help="comma-separated: lut, tabular")
    parser.add_argument("--n", type=int, default=50, help="random sub-networks to check")
    parser.add_argument("--runs", type=int, default=1, help="lut: repeat the whole procedure this many times")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall (default, as hwnas devices measure) or cpu: the timing thread's CPU time")
    parser.add_argument("--statistic", choices=["min", "median"], default="min",
                        help="min (default): what reproduces on a shared CPU; median")
    parser.add_argument("--keep", default="0.5,0.75,1.0", help="compressed: the keep ratios measured and sampled")
    parser.add_argument("--dump", type=Path, help="also write the tables and timings to this JSON")
    args = parser.parse_args(argv)
    from common import write_section

    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        slug, title, body = globals()[f"{part}_section"](args)  # each part its own results/<slug>.md
        write_section(slug, title, body)
        print(f"## {title}\n\n{body}")
    return 0


def _errors(predicted: np.ndarray, measured: np.ndarray) -> dict:
    rel = np.abs(predicted - measured) / measured
    return {"within10": float(np.mean(rel <= 0.10)), "within5": float(np.mean(rel <= 0.05)),
            "median": float(np.median(rel)), "p90": float(np.percentile(rel, 90)),
            "rho": float(spearmanr(predicted, measured)[0]), "level": float(np.median(measured / predicted))}


def predicted_run(tmp: Path, spec: str, home: Path, args):
    """``hwnas run`` on device local-cpu with predicted latency: its candidates' genomes and predicted
    latency_ms, and the run's re-anchoring factor (the references timed at its start / in the profile)."""
    import yaml

    from hwnas.cli import main as hwnas_main
    from hwnas.store import ResultsStore

    supernet, _, checkpoint = spec.partition(":")
    config = {"name": "lut-check", "space": {"supernet": supernet, "checkpoint": checkpoint or "default"},
              "devices": [{"name": "local-cpu"}],  # backend, batch, threads, clock, statistic: from the profile
              "objectives": {"latency_ms": {"goal": "min", "source": "predicted"}, "params": "min"},
              "strategy": {"name": "random", "population": 2 * args.n, "generations": 1, "seed": args.seed},
              "measure_front": False}
    path = tmp / "lut-check.yaml"
    path.write_text(yaml.safe_dump(config))
    os.environ["HWNAS_HOME"] = str(home.parent)
    if hwnas_main(["run", str(path), "--out", str(tmp / "run"), "--quiet"]):
        raise SystemExit("hwnas run failed")
    store = ResultsStore(tmp / "run" / "results.sqlite")
    cands = [c for c in store.candidates() if "latency_ms" in c.predicted]
    return (np.array([c.genome for c in cands]), np.array([c.predicted["latency_ms"] for c in cands]),
            store.get_meta("latency_scale@local-cpu", 1.0))


def lut_section(args):
    """``--runs`` whole repetitions (measure, run, check): the last one in full, every one's headline."""
    runs = []
    for i in range(args.runs):
        runs.append(_lut_once(args))
        print(f"run {i + 1}: within ±10 % {runs[-1][1]['within10']:.0%}", flush=True)
    body, _ = runs[-1]
    if len(runs) > 1:
        lines = ["| run | within ±10 % | within ±5 % | median error | re-anchoring factor | drift among the check |",
                 "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {i + 1} | {r['within10']:.0%} | {r['within5']:.0%} | {r['median']:.1%} | {r['scale']:.3f} | "
                  f"{r['drift']:.3f} |" for i, (_, r) in enumerate(runs)]
        body = (f"{len(runs)} runs of the whole procedure, one after the other (a new device profile each); "
                f"the last in full below.\n\n" + "\n".join(lines) + "\n\n" + body)
    return "devices", "Device lookup-table latency prediction (elastic_mbv3, local CPU)", body


def _lut_once(args):
    import torch

    from hwnas.cli import main as hwnas_main
    from hwnas.devices.backends import create_backend
    from scipy.optimize import nnls

    from hwnas.devices.lut import ALONE, measure_table, stage_sums, sum_parts
    from hwnas.devices.predictors import cost_model
    from hwnas.devices.spaces import device_space

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec, what = space_spec(tmp)
        home = tmp / "devices"
        start = time.perf_counter()
        code = hwnas_main(["devices", "measure", "local-cpu", "--space", spec, "--backend", "torch-cpu",
                           "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--home", str(home),
                           "--clock", args.clock, "--statistic", args.statistic, "--quiet"])
        if code:
            raise SystemExit(code)
        measure_s = time.perf_counter() - start
        model = cost_model("local-cpu", spec, home)
        samples = model.profile.samples(spec)
        dspace = device_space(spec)
        backend = create_backend("torch-cpu", batch_size=args.batch_size, threads=args.threads, clock=args.clock,
                                 statistic=args.statistic, repeats=15, max_repeats=45)
        # the alternative: every part timed by itself, calibrated the same way
        start = time.perf_counter()
        other_table = {k: e["latency_ms"] for k, e in measure_table(dspace, backend, method=ALONE).items()}
        other_s = time.perf_counter() - start

        def stages(table, G):
            return np.hstack([stage_sums(dspace, table, G), np.ones((len(G), 1))])

        other_coef = nnls(stages(other_table, samples.genomes), samples.values["latency_ms"])[0]
        # The check's sub-networks and their predictions come from a real run on the device
        # (random search, latency predicted from its profile), minus any calibration saw.
        genomes, run_predicted, scale = predicted_run(tmp, spec, home, args)
        seen = {dspace.space.key(g) for g in samples.genomes}
        keep = [i for i, g in enumerate(genomes) if dspace.space.key(g) not in seen][:args.n]
        genomes, run_predicted = genomes[keep], run_predicted[keep]
        as_measured = model.predict(genomes)["latency_ms"]  # the profile's prediction, not re-anchored
        if not np.allclose(run_predicted, scale * as_measured, rtol=1e-9):
            raise SystemExit("the run's predicted latencies differ from the device's cost model")
        # The 10 references are timed again among the check: how far the machine moved since calibration.
        refs = samples.genomes[:10]
        start = time.perf_counter()
        results = backend.measure_many([(dspace.supernet.extract(dspace.space.decode(g)), dspace.input_shape)
                                        for g in np.concatenate([genomes, refs])])  # interleaved, like the table
        check_s = time.perf_counter() - start
        results, refs_again = results[:len(genomes)], results[len(genomes):]
        drift = float(np.median(np.array([m.latency_ms for m in refs_again]) / samples.values["latency_ms"][:10]))
        measured = np.array([m.latency_ms for m in results])
        noise = [m.iqr_ms / m.median_ms for m in results]
        ours = _errors(run_predicted, measured)
        unanchored = _errors(as_measured, measured)
        ours_drift = _errors(drift * as_measured, measured)
        if args.dump:  # everything needed to study other calibrations offline
            import json

            args.dump.write_text(json.dumps({
                "genomes": genomes.tolist(), "measured": measured.tolist(),
                "ref_genomes": samples.genomes.tolist(), "ref_measured": samples.values["latency_ms"].tolist(),
                "table": model.table, "other_table": other_table}))
        other_as_measured = stages(other_table, genomes) @ other_coef
        other = _errors(scale * other_as_measured, measured)
        other_unanchored = _errors(other_as_measured, measured)
        other_drift = _errors(drift * other_as_measured, measured)
        raw_context = float(np.median(measured / sum_parts(dspace, model.table, genomes)))
        raw_other = float(np.median(measured / sum_parts(dspace, other_table, genomes)))
        ref_noise = samples.values["latency_iqr_ms"] / samples.values["latency_ms"]

    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    verdict = "met" if ours["within10"] >= 0.9 else "NOT met"
    rows = [("predicted within ±10 % of measured (issue 7: ≥ 90 %)", "within10", "{:.0%}"),
            ("predicted within ±5 %", "within5", "{:.0%}"), ("median relative error", "median", "{:.1%}"),
            ("90th-percentile relative error", "p90", "{:.1%}"), ("Spearman rho", "rho", "{:.3f}"),
            ("median measured / predicted (1 = no drift left)", "level", "{:.3f}")]
    table = "\n".join(f"| {label} | **{fmt.format(ours[key])}** | {fmt.format(other[key])} |"
                      for label, key, fmt in rows)
    body = f"""Sub-networks of `elastic_mbv3` ({what}), torch-cpu, batch {args.batch_size}, {args.threads} thread(s), {args.clock} clock, latency = {args.statistic} of the runs.
`hwnas devices measure local-cpu` built the lookup table ({len(model.table)} entries, each part timed inside running
networks) and timed {len(samples)} whole sub-networks (the 10 references and 30 seeded random ones) to calibrate it,
in {measure_s:.0f} s; the alternative table (`--table-timing alone`, each part timed by itself, {other_s:.0f} s) was
calibrated the same way on the same samples; then `hwnas run` on device `local-cpu` (random search, seed {args.seed},
latency predicted from the profile) proposed {len(genomes)} other sub-networks, which were
measured whole ({check_s:.0f} s, latency {measured.min():.1f}–{measured.max():.1f} ms).
The run re-anchored the table (`reanchor: auto`, the profile was measured on this machine): the 10 reference
sub-networks timed at its start took {scale:.3f} x their time in the profile, and its predictions are scaled by that.
Issue 7 target (≥ 90 % within ±10 %): **{verdict}**.

| figure | parts timed in context (the default) | parts timed alone |
| --- | --- | --- |
{table}
| without re-anchoring (`reanchor: false`): within ±10 % | {unanchored['within10']:.0%} | {other_unanchored['within10']:.0%} |
| without re-anchoring: median measured / predicted | {unanchored['level']:.3f} | {other_unanchored['level']:.3f} |
| measured / table sum before calibration (median; 1 = the parts add up) | {raw_context:.3f} | {raw_other:.3f} |
| diagnostic: within ±10 % with the drift measured on the 10 references timed again among the check ({drift:.3f}) instead | {ours_drift['within10']:.0%} | {other_drift['within10']:.0%} |

Both are calibrated per stage: latency = c0 · (stem + head) + Σ c_i · (stage i's blocks) + c, non-negative least
squares on the calibration samples ({model.method}).

Timing noise (IQR / median of one sub-network's runs): {np.median(noise):.1%} median, {np.max(noise):.1%} max over the
check; {np.median(ref_noise):.1%} on the references. Load average during the run: {load}. On this virtual machine a
single-threaded run varies by 10–40 % from one second to the next even when it is otherwise idle
(interference only ever adds time), which is why the latency is the minimum of short interleaved rounds:
measured here, that figure moved 2–3 % between repeated sessions where the median moved 12 %.
On a machine whose load changes within a minute the figure does not hold: in this script's runs of 2026-12-01
while another job came and went on the second core, the references timed at the run's start were 0.95-1.06 x the
profile and 0.88-1.09 x among the check a minute later, which left 12-26 % within ±10 % re-anchored (56-72 % not
re-anchored); run it with the machine otherwise quiet.
Why calibrate at all: in context, the first and largest block (stride 2 at 14x14 px) of a full-depth network ran
up to 3x slower than the same block timed alone or inside a shallower random sub-network (memory-allocator and
cache state), and parts timed alone miss the cache state of a real run; a per-stage fit on whole networks absorbs
both.
"""
    return body, {**ours, "scale": scale, "drift": drift}


def compressed_section(args):
    import torch

    from hwnas.devices.backends import create_backend
    from hwnas.devices.measure import DEFAULT_TIMING, compressed_models, measure_device, reference_drift
    from hwnas.devices.predictors import cost_model
    from hwnas.devices.spaces import device_space
    from hwnas.dimensions import JointSpace

    torch.set_num_threads(args.threads)
    keep = sorted(float(k) for k in args.keep.split(","))
    options = {"pruning": {"keep": keep}, "quantization": {"precisions": ["int8", "fp32"]}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec, what = space_spec(tmp)
        home = tmp / "devices"
        start = time.perf_counter()
        summary = measure_device("local-cpu", spec, "onnxruntime-cpu", batch_size=args.batch_size,
                                 threads=args.threads, home=home, clock=args.clock, statistic=args.statistic,
                                 dimensions=options)
        measure_s = time.perf_counter() - start
        dspace = device_space(spec)
        joint = JointSpace(dspace.supernet, ["architecture", "pruning", "quantization"], options)
        model = cost_model("local-cpu", spec, home, joint=joint)
        seen = {joint.space.key(joint.space.encode(c)) for c in model.configs}
        genomes = []
        for g in joint.space.sample(np.random.default_rng(args.seed), 20 * args.n):
            if len(genomes) < args.n and joint.space.key(g) not in seen:
                seen.add(joint.space.key(g))
                genomes.append(g)
        genomes = np.array(genomes)
        configs = [joint.space.decode(g) for g in genomes]
        settings = dict(batch_size=args.batch_size, threads=args.threads, clock=args.clock, statistic=args.statistic)
        scale = reference_drift(model, settings)  # what a run does at its start (reanchor: auto)
        model.latency_scale = scale
        predicted = model.predict(genomes)["latency_ms"]
        start = time.perf_counter()
        backend = create_backend("onnxruntime-cpu", **settings, **DEFAULT_TIMING)
        results = backend.measure_many([(m, dspace.input_shape) for m in compressed_models(dspace, configs)])
        check_s = time.perf_counter() - start
        measured = np.array([m.latency_ms for m in results])
        noise = [m.iqr_ms / m.median_ms for m in results]
        if args.dump:
            import json

            args.dump.write_text(json.dumps({"configs": configs, "measured": measured.tolist(),
                                             "predicted": predicted.tolist(), "scale": scale,
                                             "calibration": model.document["samples"], "table": model.table}))
    ours, unanchored = _errors(predicted, measured), _errors(predicted / scale, measured)
    int8_units = np.array([sum(v == "int8" for k, v in c.items() if k.startswith("quant.")) for c in configs])
    pruned = np.array([any(v < 1 for k, v in c.items() if k.startswith("prune.")) for c in configs])
    rel = np.abs(predicted - measured) / measured
    groups = [("every candidate", np.ones(len(configs), bool)), ("with int8 units", int8_units > 0),
              ("all fp32", int8_units == 0), ("with a pruned stage", pruned), ("no stage pruned", ~pruned)]
    group_rows = "\n".join(f"| {label} | {int(m.sum())} | {np.mean(rel[m] <= 0.10):.0%} | {np.median(rel[m]):.1%} |"
                           for label, m in groups if m.any())
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    verdict = "met" if ours["within10"] >= 0.9 else "NOT met"
    body = f"""Compressed sub-networks of `elastic_mbv3` ({what}) on onnxruntime-cpu, batch {args.batch_size}, {args.threads} thread(s), {args.clock} clock, latency = {args.statistic} of the runs.
`hwnas devices measure local-cpu --backend onnxruntime-cpu --dimensions pruning,quantization` (keep ratios {", ".join(f"{k:g}" for k in keep)}; int8, fp32)
built the compressed lookup table ({summary['entries']} entries: every block choice x keep ratio x precision at every resolution,
stem and head per precision; each part timed alone in onnxruntime, one session per part model) and timed {summary['samples']}
whole compressed sub-networks to calibrate it, in **{measure_s:.0f} s**. Then {len(configs)} random candidates of the joint space
(each stage's keep ratio and each unit's precision drawn at random; {int(np.sum(int8_units > 0))} with int8 units, {int(pruned.sum())} with a pruned stage;
none among the calibration samples) were built as the search measures them (pruned layers, int8 units as QDQ) and timed whole
({check_s:.0f} s, latency {measured.min():.2f}–{measured.max():.2f} ms). Re-anchored as a run does: the profile's first 10 calibration
sub-networks timed again just before took {scale:.3f} x their time in the profile.
Issue 18 target (≥ 90 % within ±10 %): **{verdict}**.

| figure | value |
| --- | --- |
| predicted within ±10 % of measured (issue 18: ≥ 90 %) | **{ours['within10']:.0%}** |
| predicted within ±5 % | {ours['within5']:.0%} |
| median relative error | {ours['median']:.1%} |
| 90th-percentile relative error | {ours['p90']:.1%} |
| Spearman rho | {ours['rho']:.3f} |
| median measured / predicted (1 = no drift left) | {ours['level']:.3f} |
| without re-anchoring: within ±10 % | {unanchored['within10']:.0%} |

| candidates | n | within ±10 % | median error |
| --- | --- | --- | --- |
{group_rows}

{model.method}: latency = Σ over (stem + head, each stage) of c_fp32 · (its fp32 units' entries) + c_int8 · (its int8
units' entries) + c, non-negative least squares. Timing noise (IQR / median of one candidate's runs): {np.median(noise):.1%}
median, {np.max(noise):.1%} max over the check. Load average at the end: {load}.
"""
    return "devices_compressed", "Compressed lookup table: predicted vs measured latency (issue 18)", body


if __name__ == "__main__":
    sys.exit(main())
