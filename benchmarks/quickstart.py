"""Time `hwnas run CONFIG` end to end and record the run's figures (quickstart by default).

    python benchmarks/quickstart.py [--config experiments/quickstart.yaml]

The quickstart's section is ``results/quickstart.md`` (with its targets); another experiment
writes ``results/search_<file stem>.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_section


def compression_rows(front, run_dir: Path, quickstart: bool) -> str:
    """Keep ratios and precisions on the front, and its accuracy span against the measurement's noise."""
    import yaml

    if not front or not any(k.startswith(("prune.", "quant.")) for k in front[0]):
        return ""
    keeps = sorted({float(v) for r in front for k, v in r.items() if k.startswith("prune.") and v})
    precisions = sorted({v for r in front for k, v in r.items() if k.startswith("quant.") and v})
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    n = cfg.get("accuracy_eval", {}).get("images") or 2000  # fmnist-mini's validation split
    acc = [float(r["accuracy"]) for r in front]
    p = sum(acc) / len(acc)
    noise = (p * (1 - p) / n) ** 0.5  # binomial standard error of one accuracy measurement
    span = max(acc) - min(acc)
    t = ("≥ 2", "≥ 2", "≥ 5") if quickstart else ("", "", "")
    return (f"| keep ratios on the front | {len(keeps)} ({', '.join(f'{k:g}' for k in keeps)}) | {t[0]} |\n"
            f"| precisions on the front | {len(precisions)} ({', '.join(precisions)}) | {t[1]} |\n"
            f"| front accuracy span / accuracy noise (binomial s.e. on {n} images: {100 * noise:.2f} points) | "
            f"{100 * span:.1f} points = {span / noise:.0f}x | {t[2]} |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/quickstart.yaml")
    parser.add_argument("--run", type=Path, help="record a finished run of CONFIG instead of running it "
                                                 "(wall time: the run's own, from its store)")
    args = parser.parse_args()
    if args.run:
        import sqlite3

        out, summary = args.run, f"(recorded from the finished run {args.run})"
        with sqlite3.connect(out / "results.sqlite") as db:
            wall = float(db.execute("SELECT value FROM meta WHERE key = 'wall_time_s'").fetchone()[0])
        load_before = load_after = float("nan")
    else:
        out = Path(tempfile.mkdtemp(prefix="hwnas-quickstart-")) / "run"
        cmd = [sys.executable, "-m", "hwnas.cli", "run", args.config, "--out", str(out), "--quiet"]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()[0]
        if proc.returncode != 0:
            sys.exit(f"quickstart failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        summary = proc.stdout.strip()
    with open(out / "front.csv") as f:
        front = list(csv.DictReader(f))
    with open(out / "candidates.csv") as f:
        n_cands = sum(1 for _ in csv.DictReader(f))
    measured = all(r["accuracy_source"] == "measured" and r["latency_ms_source"] == "measured" for r in front)
    quickstart = Path(args.config).stem == "quickstart"
    targets = ("≤ 300 s", "≥ 8", "yes") if quickstart else ("", "", "yes")
    compression = compression_rows(front, out, quickstart)
    load = "not recorded" if args.run else f"{load_before:.1f} / {load_after:.1f}"
    rows = "\n".join(f"| {r['id']} | `{r['arch']}` | {float(r['accuracy']):.4f} | {float(r['latency_ms']):.2f} |"
                     for r in front)
    body = f"""
| figure | value | target |
|---|---|---|
| wall time of `hwnas run {args.config}`{" (the run's own)" if args.run else ""} | {wall:.0f} s | {targets[0]} |
| distinct candidates evaluated | {n_cands} | |
| sub-networks on the front | {len(front)} | {targets[1]} |
| front values all measured (not predicted) | {'yes' if measured else 'NO'} | {targets[2]} |
{compression}| machine load (1-min load average on 2 cores, before / after) | {load} | |

The front (validation accuracy measured after BN recalibration; latency measured, minimum of interleaved rounds):

| id | arch | accuracy | latency_ms |
|---|---|---|---|
{rows}

{summary}
"""
    slug = "quickstart" if quickstart else f"search_{Path(args.config).stem}"
    title = "Quickstart: hwnas run experiments/quickstart.yaml" if quickstart else f"Search: hwnas run {args.config}"
    write_section(slug, title, body, cmd=f"python benchmarks/quickstart.py --config {args.config}"
                                         + (f" --run {args.run}" if args.run else ""))
    print(body)


if __name__ == "__main__":
    main()
