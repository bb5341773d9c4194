"""Joint vs staged compression on the Fashion-MNIST supernet, at the same number of evaluated candidates.

    python benchmarks/joint_vs_staged.py [--evaluations N] [--arch-share 0.7] [--out DIR]

* joint: ``experiments/compression_fmnist.yaml`` (architecture x pruning x quantization) with its
  strategy (``--evaluations`` overrides its budget); N = the distinct candidates it evaluated.
* staged: the same file with ``dimensions: [architecture]`` and ``strategy.evaluations`` set so that it
  evaluates ``--arch-share`` of N (its initial samples included), then its front compressed with the
  rest of N: per front member, first each uniform keep ratio below 1 in every stage (fp32), then
  seeded random draws of every pruning and precision gene (the architecture fixed), all measured by
  ``hwnas.measure`` (accuracy and onnxruntime latency of each; where the file predicts accuracy in the
  loop, staged thus measures the accuracy of more candidates than joint).
  The staged front: the non-dominated feasible points of the architecture front and its variants.

Both fronts are on (measured validation accuracy, measured onnxruntime latency), same seeds, one
process, one after the other. Common normalisation: ideal and nadir of the union of both fronts'
points (ideal -> 0, nadir -> 1 per objective), reference point 1.1 (search/hypervolume.py).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from common import ROOT, project_path, write_section

import hwnas
from hwnas.errors import HwnasError
from hwnas.search import nondominated, normalized_hypervolume

YAML = ROOT / "experiments" / "compression_fmnist.yaml"


def base_config() -> dict:
    """The shipped file with its data path made absolute (the derived files are written elsewhere)."""
    cfg = yaml.safe_load(YAML.read_text())
    kind, _, rel = cfg["data"].partition(":")
    folder = (YAML.parent / rel).resolve()
    if not folder.is_dir():
        raise HwnasError(f"{project_path(YAML)}: data: {project_path(folder)} is not a folder; the Fashion-MNIST "
                         f"IDX files are needed there")
    cfg["data"] = f"{kind}:{folder}"
    return cfg


def read_rows(path: Path):
    with open(path) as f:
        return list(csv.DictReader(f))


def points(rows) -> np.ndarray:
    """(-accuracy, latency_ms) per row: both minimised."""
    return np.array([[-float(r["accuracy"]), float(r["latency_ms"])] for r in rows], dtype=float).reshape(-1, 2)


def front_rows(rows):
    F = points(rows)
    return sorted([rows[i] for i in nondominated(F)], key=lambda r: float(r["latency_ms"])) if len(rows) else []


def run_file(cfg: dict, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def variants(joint, row, budget: int, rng) -> list:
    """``budget`` compressed versions of an architecture-only front member (its architecture fixed):
    each uniform keep ratio below 1 in fp32 first (what a staged pipeline tries first), then random
    draws of every pruning and precision gene."""
    arch = {v.name: row[v.name] for v in joint.supernet.space.variables}
    comp = [v for dim, sl in joint.parts for v in joint.space.variables[sl]]
    plain = {v.name: 1.0 if v.name.startswith("prune.") else "fp32" for v in comp}
    seen = {tuple(sorted(plain.items()))}
    out = []
    keeps = sorted({o for v in comp if v.name.startswith("prune.") for o in v.options if o < 1.0}, reverse=True)
    tries = [{**plain, **{v.name: k for v in comp if v.name.startswith("prune.")}} for k in keeps]
    while len(out) < budget:
        genes = tries.pop(0) if tries else {v.name: v.options[rng.integers(len(v.options))] for v in comp}
        key = tuple(sorted(genes.items()))
        if key not in seen:
            seen.add(key)
            out.append({**arch, **genes})
    return out


def compressed_count(rows) -> int:
    """Front members with a pruned stage or an int8 unit (the sub-network text names them)."""
    return sum("keep=" in r["arch"] or "int8=" in r["arch"] for r in rows)


def hv(F, ideal, nadir):
    return normalized_hypervolume(F, ideal, nadir, ref=1.1)


def table(rows) -> str:
    lines = ["| val accuracy % | latency ms | sub-network |", "|---|---|---|"]
    lines += [f"| {100 * float(r['accuracy']):.2f} | {float(r['latency_ms']):.2f} | `{r['arch']}` |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, help="strategy.evaluations of the joint search (default: the file's)")
    parser.add_argument("--arch-share", type=float, default=0.7, help="staged: share of N for the architecture search")
    parser.add_argument("--out", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()
    if not 0 < args.arch_share < 1:
        print("joint_vs_staged: --arch-share must be between 0 and 1 (exclusive)", file=sys.stderr)
        return 2
    try:
        cfg = base_config()
    except HwnasError as err:
        print(err, file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="hwnas-staged-"))
    if args.out and args.out.exists() and any(args.out.iterdir()):
        print(f"joint_vs_staged: --out {args.out} is not empty; give a new folder", file=sys.stderr)
        return 2
    load = [os.getloadavg()]
    seed = cfg["strategy"]["seed"]
    strategy = {**cfg["strategy"], **({"evaluations": args.evaluations} if args.evaluations else {})}
    # Initial samples are measured only to fit predictors of predicted objectives (hwnas.pipeline).
    predicted = any(o.get("source") == "predicted" for o in cfg["objectives"].values())
    initial = strategy.get("initial_samples", 40) if predicted else 0
    try:
        # (a) joint
        joint_cfg = {**cfg, "name": "joint", "strategy": strategy}
        start = time.time()
        joint_run = hwnas.run(run_file(joint_cfg, out / "files", "joint"), out=out / "joint")
        t_joint = time.time() - start
        n = len(joint_run.rows())
        load.append(os.getloadavg())

        # (b) staged: architecture only with part of N, then its front compressed with the rest
        space = {k: v for k, v in cfg["space"].items() if k not in ("pruning", "quantization")}
        arch_budget = max(1, round(args.arch_share * n) - initial)
        arch_cfg = {**cfg, "name": "staged-arch", "space": {**space, "dimensions": ["architecture"]},
                    "strategy": {**strategy, "evaluations": arch_budget}}
        start = time.time()
        arch_run = hwnas.run(run_file(arch_cfg, out / "files", "staged-arch"), out=out / "staged-arch")
        n_arch = len(arch_run.rows())
        arch_front = read_rows(out / "staged-arch" / "front.csv")
        from hwnas.dimensions import JointSpace
        from hwnas.supernets import checkpoint_path, load_checkpoint

        joint = JointSpace(load_checkpoint(checkpoint_path(cfg["space"]["checkpoint"])), cfg["space"]["dimensions"],
                           {d: cfg["space"][d] for d in cfg["space"]["dimensions"] if d in cfg["space"]})
        rest = n - n_arch
        rng = np.random.default_rng(seed)
        shares = [rest // len(arch_front) + (i < rest % len(arch_front)) for i in range(len(arch_front))]
        given = [c for row, b in zip(arch_front, shares) for c in variants(joint, row, b, rng)]
        hwnas.measure(run_file({**cfg, "name": "staged-compress"}, out / "files", "staged-compress"), given,
                      out=out / "staged-compress")
        t_staged = time.time() - start
        load.append(os.getloadavg())
    except HwnasError as err:
        print(err, file=sys.stderr)
        return 2

    joint_front = read_rows(out / "joint" / "front.csv")
    compressed = read_rows(out / "staged-compress" / "front.csv")
    staged_front = front_rows(arch_front + compressed)
    Fj, Fs = points(joint_front), points(staged_front)
    union = np.vstack([Fj, Fs])
    ideal, nadir = union.min(axis=0), union.max(axis=0)
    hv_j, hv_s = hv(Fj, ideal, nadir), hv(Fs, ideal, nadir)
    ratio = hv_j / hv_s if hv_s > 0 else float("inf")
    joint_measured_acc = sum(r["accuracy_source"] == "measured" for r in joint_run.rows())
    met = "met" if ratio >= 1.1 else "not met"
    plan = ", ".join(f"{k} {v}" for k, v in strategy.items() if k in ("name", "evaluations", "population",
                                                                         "generations", "initial_samples"))
    size = "the shipped file's strategy" if not args.evaluations else "the shipped file's strategy, budget overridden"
    body = "\n".join([
        f"Fashion-MNIST elastic MobileNetV3 (`fmnist_mbv3`), `experiments/compression_fmnist.yaml` (latency_ms <= 30, "
        f"onnxruntime 1 thread batch 32, validation accuracy on 2,000 images), seed {seed}, Ray 2 workers; "
        f"strategy: {plan} ({size}; accuracy {cfg['objectives']['accuracy']['source']} in the loop).", "",
        "| figure | joint | staged | target |", "|---|---|---|---|",
        f"| evaluated candidates | {n} | {n_arch} architecture-only + {len(given)} compressed = {n_arch + len(given)} | "
        f"same N |",
        f"| of which accuracy measured | {joint_measured_acc} | "
        f"{sum(r['accuracy_source'] == 'measured' for r in arch_run.rows()) + len(given)} | |",
        f"| wall time s | {t_joint:.0f} | {t_staged:.0f} | |",
        f"| front members | {len(Fj)} | {len(Fs)} | |",
        f"| of which compressed (pruned or int8) | {compressed_count(joint_front)} | {compressed_count(staged_front)} | |",
        f"| hypervolume (common normalisation) | {hv_j:.4f} | {hv_s:.4f} | |",
        f"| **HV ratio joint / staged** | **{ratio:.3f}** | | ≥ 1.1: **{met}** |",
        # No front's HV exceeds the whole box up to the reference point, so this staged front caps the ratio.
        f"| largest ratio any joint front could reach against this staged front (HV of the whole box, "
        f"{1.1 ** 2:.2f}, / staged HV) | {1.1 ** 2 / hv_s if hv_s > 0 else float('inf'):.3f} | | |", "",
        "Normalisation: both fronts on (-accuracy, latency ms), each objective scaled by the union of both fronts' "
        f"points (ideal -> 0, nadir -> 1: accuracy {100 * -nadir[0]:.2f}-{100 * -ideal[0]:.2f} %, latency "
        f"{ideal[1]:.2f}-{nadir[1]:.2f} ms), reference point 1.1 per objective.", "",
        f"Staged compression: the {len(arch_front)} architecture-only front members shared {rest} evaluations "
        f"({', '.join(map(str, shares))}); per member first each uniform keep ratio below 1 in fp32, then seeded "
        "random draws of every pruning and precision gene, each measured (accuracy and latency) by `hwnas.measure`.",
        "", f"Load average (1, 5, 15 min) at the start {load[0][0]:.2f} {load[0][1]:.2f} {load[0][2]:.2f}, after "
        f"joint {load[1][0]:.2f}, after staged {load[2][0]:.2f} (2 cores, shared).", "",
        "**Joint front**", "", table(joint_front), "", "**Staged front**", "", table(staged_front)])
    write_section("joint_vs_staged", "Joint vs staged compression (benchmarks/joint_vs_staged.py)", body)
    print(body)
    print(f"run folders: {out}")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
