"""``hwnas devices ...``: list, show, add, remove, refs, predict and measure device profiles.

User errors raise :class:`hwnas.errors.HwnasError`; ``hwnas.cli.main`` prints the one line
and exits with code 2.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from .errors import HwnasError
from .registry import NamesHelp
from .rundir import check_output_path

KINDS = ["cpu", "gpu", "phone", "board", "accelerator", "fpga", "other"]
LOW_RHO = 0.8  # leave-one-out Spearman rho below which `devices add` advises more samples
MORE_PAYS = 0.01  # expected rho gained by 10 more samples above which they are worth measuring


def _spaces_text(profile) -> str:
    return ",".join(profile.spaces) or "-"


def cmd_list(args) -> int:
    from hwnas.devices.registry import devices_home, list_devices

    profiles = list_devices(args.home)
    if not profiles:
        print(f"no devices (home: {devices_home(args.home)})")
        return 0
    rows = [("NAME", "KIND", "SPACES", "WHERE", "LABELS", "HARDWARE")]
    for p in profiles:
        rows.append((p.name, p.spec.kind, _spaces_text(p), "shipped" if p.shipped else "user",
                     ",".join(p.spec.labels) or "-", p.spec.hardware or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    return 0


def cmd_show(args) -> int:
    import yaml

    from hwnas.devices.registry import get_device

    p = get_device(args.name, args.home)
    print(f"# {p.path}{' (shipped, read-only)' if p.shipped else ''}")
    print(yaml.safe_dump(p.spec.model_dump(exclude_none=True), sort_keys=False).rstrip())
    for space in p.spaces:
        if p.has_space(space):
            s = p.samples(space)
            lut = p.file("lut", space, "json")
            print(f"samples {space}: {len(s)} rows, metrics {', '.join(s.metrics)}"
                  + (f"; lookup table {lut.name}" if lut.is_file() else ""))
    return 0


def cmd_remove(args) -> int:
    from hwnas.devices.registry import remove_device

    path = remove_device(args.name, args.home)
    print(f"removed device {args.name!r} ({path})")
    return 0


def _refs_rows(args):
    """(arch, {metric: value}) rows of the template: see the ``refs`` help."""
    from hwnas.devices.spaces import device_space

    if args.out:
        check_output_path(Path(args.out), "--out", folder=False)
    dspace = device_space(args.space)
    n = args.n if args.n is not None else 10
    if n < 1:
        raise HwnasError(f"--n {n}: allowed: a whole number >= 1")
    if args.device is None:
        refs = dspace.reference_archs()
        if n <= len(refs) or dspace.kind != "tabular":
            archs = refs[:n] if n <= len(refs) else _calibration(dspace, n)
        else:
            from hwnas.devices.predictors import _pretrained

            archs = refs + [dspace.format_arch(g) for g in _pretrained(dspace.name).suggest(n - len(refs))]
        return [(a, {}) for a in archs], "", dspace
    from hwnas.devices.predictors import cost_model

    model = cost_model(args.device, dspace.name, args.home)
    samples = model.samples
    if samples is None:
        raise HwnasError(f"device {args.device!r} has no samples for {dspace.name}")
    have = [(a, {m: samples.values[m][i] for m in samples.metrics}) for i, a in enumerate(samples.archs)]
    if dspace.kind == "tabular":
        new = [dspace.format_arch(g) for g in model.suggest(n)]
    else:
        taken = set(samples.archs)
        new = [a for a in _calibration(dspace, len(taken) + n + 10) if a not in taken][:n]
    return have + [(a, {}) for a in new], f" after the {len(samples)} samples of {args.device!r}", dspace


def _calibration(dspace, n):
    from hwnas.devices.measure import calibration_archs

    return calibration_archs(dspace, n)


def cmd_refs(args) -> int:
    rows, after, dspace = _refs_rows(args)
    metrics = ["latency_ms"] + sorted({m for _, v in rows for m in v} - {"latency_ms"})
    table = [["arch"] + metrics] + [[arch] + [f"{values[m]:.6g}" if m in values else "" for m in metrics]
                                     for arch, values in rows]
    if args.out:
        _write_csv_atomically(Path(args.out), table)
    else:
        csv.writer(sys.stdout, lineterminator="\n").writerows(table)
    if args.out:
        blank = sum(1 for _, v in rows if not v)
        how = ("the space's reference architectures first, then ones chosen to reduce the few-shot predictor's "
               "uncertainty" if args.device is None and len(rows) > 10 and dspace.kind == "tabular" else
               "chosen to reduce the few-shot predictor's uncertainty" if dspace.kind == "tabular" and args.device
               else "the space's reference architectures" if len(rows) <= 10 else
               "the reference architectures, then seeded random ones")
        force = " --force" if args.device else ""
        name = args.device or "NAME"
        print(f"wrote {blank} architectures of {dspace.name} to measure{after} to {args.out} ({how}); fill in "
              f"latency_ms (and optionally energy_mJ, power_W) and run 'hwnas devices add {name} --space "
              f"{dspace.name} --samples {args.out}{force}'", file=sys.stderr)
    return 0


def _write_csv_atomically(path: Path, rows) -> None:
    """Write then rename: an interrupted or failed write leaves no half file under ``path``."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
        os.replace(partial, path)
    except OSError as err:
        raise HwnasError(f"--out: cannot write {path}: {err.strerror or err}") from None
    finally:
        partial.unlink(missing_ok=True)


def _fit_summary(profile, space: str) -> str:
    from hwnas.devices.predictors import cost_model

    try:
        model = cost_model(profile, space)
        rhos = model.loo_spearman()
    except HwnasError as err:
        return f"fit check unavailable: {err}"
    samples = model.samples
    refs = set(model.dspace.reference_archs())
    on_refs = " (the samples are the space's 10 reference architectures)" if (
        samples is not None and len(samples) == len(refs)
        and {model.dspace.format_arch(g) for g in samples.genomes} == refs) else ""
    fit = ", ".join(f"{m} {r:.3f}" for m, r in rhos.items())
    lines = [f"predictor: {model.method}; leave-one-out Spearman rho on the {len(samples)} samples: {fit}{on_refs}"]
    name, rho = profile.name, rhos.get("latency_ms", float("nan"))
    more = f"'hwnas devices refs --space {space} --device {name} --n 10 --out more.csv'"
    if hasattr(model, "advice"):
        a = model.advice()
        pays = a["more"] - a["now"] >= MORE_PAYS
        lines.append(f"expected Spearman rho of latency over the space (the model's own estimate): {a['now']:.3f}; "
                     f"with {a['extra']} more samples from {more}: {a['more']:.3f} "
                     + ("(more samples would pay)" if pays else "(more samples would hardly change it)"))
        top = sorted(a["weights"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"the closest meta-training device explains {a['resemblance']:.2f} of the samples' variance "
                     f"(leave-one-out R^2); the adapted latency model weighs "
                     + ", ".join(f"{k} {w:.2f}" for k, w in top)
                     + (" (unlike the meta-training devices: the samples decide)" if a["resemblance"] < 0.8 else ""))
    if "energy_mJ" in rhos and hasattr(model, "estimated_energy"):
        from scipy.stats import spearmanr

        est = spearmanr(model.estimated_energy(samples.genomes), samples.values["energy_mJ"])[0]
        lines.append(f"energy_mJ: the adapted model's leave-one-out rho {rhos['energy_mJ']:.3f} against {est:.3f} for "
                     f"the analytical estimate (per-MAC and per-byte energy, no fit) on the same samples")
    from hwnas.devices.registry import RECOMMENDED_SAMPLES

    if len(samples) < RECOMMENDED_SAMPLES:
        lines.append(f"warning: {len(samples)} samples, {RECOMMENDED_SAMPLES} recommended: measure "
                     f"{RECOMMENDED_SAMPLES - len(samples)} more ({more.replace('--n 10', f'--n {RECOMMENDED_SAMPLES - len(samples)}')} "
                     f"lists them after yours), then 'hwnas devices add {name} --space {space} --samples more.csv --force'")
    elif rho == rho and rho < LOW_RHO:
        lines.append(f"warning: leave-one-out rho {rho:.2f} is low (< {LOW_RHO}): the samples may be noisy or the "
                     f"device unlike any the predictor knows; measure 10 more ({more} lists them after yours), "
                     f"then 'hwnas devices add {name} --space {space} --samples more.csv --force'")
    return "\n".join(lines)


def cmd_add(args) -> int:
    from hwnas.devices.registry import add_device

    profile = add_device(args.name, args.space, args.samples, hardware=args.hardware, kind=args.kind,
                         force=args.force, home=args.home)
    from hwnas.devices.registry import MAX_FIT_SAMPLES

    samples = profile.samples(args.space)
    print(f"added {len(samples)} samples of {args.name!r} on {samples.space} ({', '.join(samples.metrics)}) "
          f"to {profile.path}" + (f"; its predictor fits on a seeded spread subset of {MAX_FIT_SAMPLES} of them "
                                  f"(the few-shot fit's cost grows steeply with the rows)"
                                  if len(samples) > MAX_FIT_SAMPLES else ""))
    print(_fit_summary(profile, args.space))
    return 0


def cmd_predict(args) -> int:
    from hwnas.devices.predictors import cost_model

    check_output_path(Path(args.out), "--out", folder=False)
    model = cost_model(args.name, args.space, args.home)
    path = Path(args.archs)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise HwnasError(f"cannot read architectures file {path}: {err}") from None
    if not rows or "arch" not in rows[0]:
        raise HwnasError(f"{path}: needs a header with an 'arch' column and at least one row")
    genomes = []
    for line, row in enumerate(rows, start=2):
        try:
            genomes.append(model.dspace.parse_arch(row["arch"] or ""))
        except HwnasError as err:
            raise HwnasError(f"{path}: row {line}: column arch: {err}") from None
    import numpy as np

    values = model.predict(np.stack(genomes))
    estimated = [m for m in values if model.labels[m] == "estimated"]
    _write_csv_atomically(Path(args.out), [["arch"] + list(values) + ["estimated"]] + [
        [row["arch"]] + [f"{values[m][i]:.6g}" for m in values] + [";".join(estimated)] for i, row in enumerate(rows)])
    note = f" ({', '.join(estimated)} estimated analytically, not measured)" if estimated else ""
    print(f"predicted {', '.join(values)} of {len(rows)} architectures on {args.name!r} with {model.method}; "
          f"wrote {args.out}{note}")
    if hasattr(model, "extrapolated"):
        for metric, below in model.extrapolated(np.stack(genomes)).items():
            if below.any():
                print(f"{int(below.sum())} {metric} prediction(s) extrapolate below half the smallest sample "
                      f"({model.knees[metric]:.4g}): softly floored there, so positive and in the same order")
    return 0


def cmd_measure(args) -> int:
    from hwnas.devices.measure import measure_device

    def progress(text):
        print(f"\r{text}   ", end="", file=sys.stderr, flush=True)

    dimensions = _measured_dimensions(args)
    result = measure_device(args.name, args.space, args.backend, batch_size=args.batch_size, threads=args.threads,
                            home=args.home, hardware=args.hardware, ray_resource=args.ray_resource,
                            progress=None if args.quiet else progress, table_timing=args.table_timing,
                            clock=args.clock, statistic=args.statistic, dimensions=dimensions)
    if not args.quiet:
        print(file=sys.stderr)
    s = result["settings"]
    where = f"Ray node {result['node']}" if args.ray_resource or result["profile"].spec.ray_resource else "here"
    if dimensions is not None:
        choices = "; ".join(f"{d}: " + ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in o.items())
                            for d, o in result["dimensions"].items())
        print(f"measured {result['entries']} compressed lookup-table entries ({choices}) and {result['samples']} "
              f"whole compressed sub-networks of {args.space} on {args.backend} (batch {s['batch_size']}, "
              f"{s['threads']} thread(s), {s['clock']} clock, {s['statistic']} of the runs) {where}; noise (median "
              f"IQR/median): entries {result['noise_entries']:.1%}, sub-networks {result['noise_samples']:.1%}; "
              f"saved to {result['profile'].path}")
        return 0
    print(f"measured {result['entries']} lookup-table entries and {result['samples']} reference sub-networks of "
          f"{args.space} on {args.backend} (batch {s['batch_size']}, {s['threads']} thread(s), "
          f"{s['clock']} clock, {s['statistic']} of the runs) {where}; "
          f"noise (median IQR/median): entries {result['noise_entries']:.1%}, "
          f"sub-networks {result['noise_samples']:.1%}; saved to {result['profile'].path}")
    print(_fit_summary(result["profile"], args.space))
    return 0


def _measured_dimensions(args):
    """``--dimensions`` (default choices) or ``--experiment`` (its space's dimensions and choices), else None."""
    if args.dimensions and args.experiment:
        raise HwnasError("--dimensions and --experiment: give one (the experiment names its dimensions)")
    if args.experiment:
        from hwnas.config import parse_config, read_yaml, resolve_paths

        path = Path(args.experiment)  # read, not validated for running: its cost model may need this table
        cfg = parse_config(resolve_paths(read_yaml(path), path.parent), path)
        dims = [d for d in cfg.space.dimensions if d != "architecture"]
        if not dims:
            raise HwnasError(f"--experiment: {args.experiment} searches architecture only (space.dimensions); "
                             "measure without --experiment")
        return {d: cfg.space.dimension_options.get(d) or {} for d in dims}
    if args.dimensions is None:
        return None
    from hwnas.dimensions import names

    dims = [d.strip() for d in args.dimensions.split(",") if d.strip() and d.strip() != "architecture"]
    allowed = [n for n in names() if n != "architecture"]
    bad = [d for d in dims if d not in allowed]
    if bad or not dims:
        raise HwnasError(f"--dimensions: {'unknown dimension ' + repr(bad[0]) if bad else 'none given'}; "
                         f"allowed: {', '.join(allowed)} (comma-separated)")
    return {d: {} for d in dims}


def _spaces():
    from hwnas.devices.spaces import known_spaces

    return known_spaces()


def _backends():
    from hwnas.devices.backends import BACKENDS

    return BACKENDS.names()


SPACE_HELP = NamesHelp("one of: {names} (a supernet space also as NAME:CHECKPOINT)", _spaces)


def register(subparsers) -> None:
    """Add the ``devices`` command group to the ``hwnas`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="device registry folder (default: $HWNAS_HOME/devices or ~/.hwnas/devices)")
    p = subparsers.add_parser("devices", help="device profiles: list, show, add, remove, refs, predict, measure")
    sub = p.add_subparsers(dest="subcommand", required=True)

    q = sub.add_parser("list", parents=[common], help="list user and shipped device profiles")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("show", parents=[common], help="print a device profile")
    q.add_argument("name")
    q.set_defaults(func=cmd_show)

    q = sub.add_parser("remove", parents=[common], help="delete a user device profile")
    q.add_argument("name")
    q.set_defaults(func=cmd_remove)

    q = sub.add_parser("refs", parents=[common],
                       help="architectures to measure, as a CSV template (default: the space's 10 references)")
    q.add_argument("--space", required=True, help=SPACE_HELP)
    q.add_argument("--n", type=int, help="how many to measure: without --device the first 10 are the references and "
                   "the rest are chosen to reduce the few-shot predictor's uncertainty; with --device, N new ones")
    q.add_argument("--device", help="a device with samples on the space: its samples come first (filled in), then "
                   "N new architectures chosen given them (default N: 10)")
    q.add_argument("--out", help="write to this file instead of standard output")
    q.set_defaults(func=cmd_refs)

    q = sub.add_parser("add", parents=[common], help="add a device (or a space of it) from measured samples")
    q.add_argument("name")
    q.add_argument("--space", required=True, help=SPACE_HELP)
    q.add_argument("--samples", required=True, help="CSV: arch, latency_ms [, energy_mJ, power_W]")
    q.add_argument("--hardware", help="free text, e.g. 'Raspberry Pi 4, Cortex-A72'")
    q.add_argument("--kind", choices=KINDS)
    q.add_argument("--force", action="store_true", help="replace existing samples of this space")
    q.set_defaults(func=cmd_add)

    q = sub.add_parser("predict", parents=[common], help="predict a device's costs for architectures")
    q.add_argument("name")
    q.add_argument("--space", required=True, help=SPACE_HELP)
    q.add_argument("--archs", required=True, help="CSV with an 'arch' column")
    q.add_argument("--out", required=True)
    q.set_defaults(func=cmd_predict)

    q = sub.add_parser("measure", parents=[common], help="measure a supernet space's lookup table here")
    q.add_argument("name")
    q.add_argument("--space", required=True, help=SPACE_HELP)
    q.add_argument("--backend", default="torch-cpu", help=NamesHelp("one of: {names} (default torch-cpu)", _backends))
    q.add_argument("--batch-size", type=int)
    q.add_argument("--threads", type=int)
    q.add_argument("--clock", choices=["wall", "cpu"],
                   help="wall (default) or cpu: the timing thread's CPU time, steadier on a shared machine (1 thread)")
    q.add_argument("--statistic", choices=["min", "median"],
                   help="latency = min (default: reproduces on a shared or virtual machine) or median of the runs")
    q.add_argument("--table-timing", choices=["alone", "in-context"],
                   help="time the table's parts inside running networks (default where the backend can: "
                        "torch-cpu) or each alone")
    q.add_argument("--dimensions", help="also key the table by compression: comma-separated pruning, quantization "
                   "(their default choices); builds lut-compressed-<space>.json on onnxruntime-cpu")
    q.add_argument("--experiment", help="an experiment file: key the table by the compression dimensions and "
                   "choices its space searches (instead of --dimensions)")
    q.add_argument("--hardware")
    q.add_argument("--ray-resource", help="run on the Ray node holding this custom resource, e.g. device:NAME")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_measure)
