"""Time `hwnas run CONFIG` end to end and record the run's figures (quickstart by default).

    python benchmarks/quickstart.py [--config experiments/quickstart.yaml]

The quickstart's section is ``results/quickstart.md`` (with its targets); another experiment
writes ``results/search_<file stem>.md``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/quickstart.yaml")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="hwnas-quickstart-")) / "run"
    cmd = [sys.executable, "-m", "hwnas.cli", "run", args.config, "--out", str(out), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"quickstart failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    with open(out / "front.csv") as f:
        front = list(csv.DictReader(f))
    with open(out / "candidates.csv") as f:
        n_cands = sum(1 for _ in csv.DictReader(f))
    measured = all(r["accuracy_source"] == "measured" and r["latency_ms_source"] == "measured" for r in front)
    quickstart = Path(args.config).stem == "quickstart"
    targets = ("≤ 300 s", "≥ 5", "yes") if quickstart else ("", "", "yes")
    rows = "\n".join(f"| {r['id']} | `{r['arch']}` | {float(r['accuracy']):.4f} | {float(r['latency_ms']):.2f} |"
                     for r in front)
    body = f"""
| figure | value | target |
|---|---|---|
| wall time of `hwnas run {args.config}` | {wall:.0f} s | {targets[0]} |
| distinct candidates evaluated | {n_cands} | |
| sub-networks on the front | {len(front)} | {targets[1]} |
| front values all measured (not predicted) | {'yes' if measured else 'NO'} | {targets[2]} |

The front (validation accuracy measured after BN recalibration; latency measured, minimum of interleaved rounds):

| id | arch | accuracy | latency_ms |
|---|---|---|---|
{rows}

{proc.stdout.strip()}
"""
    slug = "quickstart" if quickstart else f"search_{Path(args.config).stem}"
    title = "Quickstart: hwnas run experiments/quickstart.yaml" if quickstart else f"Search: hwnas run {args.config}"
    write_section(slug, title, body, cmd=f"python benchmarks/quickstart.py --config {args.config}")
    print(body)


if __name__ == "__main__":
    main()
