"""Views of a run written from its store: CSVs, hypervolume history, plots and report.md."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .config import data_spec
from .evaluation import Metric, budget_slack, canonical_key, objective_matrix
from .faults import point
from .store import Candidate


ESTIMATE_NOTE = ("analytical estimates (MACs and memory traffic x per-operation energy, Horowitz ISSCC 2014; "
                 "hwnas.devices.energy), not measurements")


def candidate_rows(exp, front: Optional[Sequence[Candidate]] = None) -> List[Dict]:
    """The rows of candidates.csv (every candidate), or of front.csv (``front``)."""
    cands = exp.store.candidates() if front is None else front
    return _rows(cands, exp.metrics, exp.space_backend.describe, exp.estimated_keys())


def _rows(cands: Sequence[Candidate], metrics: Sequence[Metric], describe, estimated=()) -> List[Dict]:
    rows = []
    for c in cands:
        row = {"id": c.id, "arch": describe(c.config), "generation": c.generation}
        # One column per search variable (a table's only variable is the arch itself).
        row.update({name: value for name, value in c.config.items() if name not in row})
        for m in metrics:
            row[m.key] = c.value(m.key)
            source = c.source(m.key)
            row[f"{m.key}_source"] = "estimated" if source == "predicted" and m.key in estimated else source
        row["eval_seconds"] = round(c.wall_time_s, 4)
        rows.append(row)
    return rows


def write_csv(path: Path, rows: List[Dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(path)  # never leave a half-written view behind


def hypervolume_history(exp) -> List[tuple]:
    """(generation, candidates so far, HV) per finished generation.

    Objectives are normalised by the ideal and nadir of the feasible candidates of the
    whole run (reference point 1.1), so the curve is comparable across generations.
    """
    from hwnas.search import nondominated, normalized_hypervolume

    cands = [c for c in exp.store.candidates() if all(c.value(m.key) is not None for m in exp.metrics)]
    if not cands:
        return []
    rows = [exp._effective(c) for c in cands]
    feasible = (budget_slack(rows, exp.cfg) <= 0).all(axis=1)
    F = objective_matrix(rows, exp.metrics)
    gens = np.array([c.generation for c in cands])
    if not feasible.any():
        return [(g, int((gens <= g).sum()), 0.0) for g in exp.store.finished_generations()]
    ideal, nadir = F[feasible].min(axis=0), F[feasible].max(axis=0)
    history = []
    for g in exp.store.finished_generations():
        mask = feasible & (gens >= 0) & (gens <= g)
        front = F[mask][nondominated(F[mask])] if mask.any() else F[:0]
        history.append((g, int(((gens >= 0) & (gens <= g)).sum()), normalized_hypervolume(front, ideal, nadir)))
    return history


def hypervolume_vs_exhaustive(exp, front: Sequence[Candidate]):
    """HV(found front) / HV(true front) where the space can be enumerated (complete tables)."""
    from hwnas.search import hv_ratio

    every = exp.space_backend.exhaustive()
    if not every or not front:
        return None
    feasible = (budget_slack(every, exp.cfg) <= 0).all(axis=1)
    if not feasible.any():
        return None
    F_true = objective_matrix([r for r, ok in zip(every, feasible) if ok], exp.metrics)
    F_found = objective_matrix([exp._effective(c) for c in front], exp.metrics)
    return hv_ratio(F_found, F_true)


def exhaustive_obstacle(exp, front) -> str:
    """Why a table run's front cannot be compared with the table's exhaustive front."""
    external = sorted({m.device for m in exp.metrics if m.device and not exp.locations[m.device].here})
    if external:
        return f"the table has no column for {', '.join(external)} (predicted from the device profile)"
    missing = [m.key for m in exp.metrics if not m.measurable]
    if missing:
        return f"the table holds no {', '.join(missing)}"
    if not exp.space_backend.complete:
        return "the table samples its space, so it has no exhaustive front"
    if not front:
        return "the run's front is empty"
    return "no architecture of the table meets every budget"


def _device_text(d, loc, cfg) -> str:
    if not loc.here:
        return f"{d.name} (external: {loc.where})"
    if cfg.space.table is not None:
        return f"{d.name} ({loc.where})"
    return f"{d.name} (here: {loc.where}, batch {d.batch_size}, {d.threads} thread(s))"


def plot_pareto(path: Path, exp, front: Sequence[Candidate]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = [m for m in exp.metrics if m.goal][:2]
    cands = [c for c in exp.store.candidates() if all(c.value(m.key) is not None for m in objectives)]
    rows = [exp._effective(c) for c in cands]
    feasible = (budget_slack(rows, exp.cfg) <= 0).all(axis=1) if rows else np.zeros(0, bool)
    x, y = objectives[1], objectives[0]  # cost on x, quality (usually accuracy) on y
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = np.array([r[x.key] for r in rows])
    ys = np.array([r[y.key] for r in rows])
    ax.scatter(xs[~feasible], ys[~feasible], s=10, c="lightgray", label="over budget")
    measured = np.array([all(m.key in c.measured for m in objectives) for c in cands], dtype=bool)
    ax.scatter(xs[feasible & measured], ys[feasible & measured], s=14, c="tab:blue", alpha=0.7,
               label="measured")
    ax.scatter(xs[feasible & ~measured], ys[feasible & ~measured], s=14, facecolors="none",
               edgecolors="tab:blue", alpha=0.5, label="predicted (not measured)")
    fx = [c.value(x.key) for c in front]
    fy = [c.value(y.key) for c in front]
    order = np.argsort(fx)
    ax.plot(np.array(fx)[order], np.array(fy)[order], "-o", c="tab:red", label="Pareto front")
    for b in exp.cfg.budgets:
        key = canonical_key(exp.cfg, b.metric)
        if key == x.key:
            ax.axvline(b.value, ls="--", c="k", lw=1, label=b.text)
        elif key == y.key:
            ax.axhline(b.value, ls="--", c="k", lw=1, label=b.text)
    estimated, unmeasured = exp.estimated_keys(), exp.unmeasured()

    def label(m):
        how = ", estimated" if m.key in estimated else (", predicted" if m.key in unmeasured else "")
        return f"{m.key} ({m.goal}{how})"

    ax.set_xlabel(label(x))
    ax.set_ylabel(label(y))
    ax.set_title(f"{exp.cfg.name}: {len(cands)} candidates, {len(front)} on the front")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hv(path: Path, history) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if history:
        g, _, hv = zip(*history)
        ax.plot(g, hv, "-o")
    ax.set_xlabel("generation (0 = initial samples)")
    ax.set_ylabel("hypervolume (normalised, ref 1.1)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(exp, front: Sequence[Candidate], wall_time_s: float) -> Path:
    """Write candidates.csv, front.csv, pareto.png, hv.png and report.md into the run folder."""
    run_dir, cfg = exp.run_dir, exp.cfg
    cands = exp.store.candidates()
    estimated = exp.estimated_keys()
    write_csv(run_dir / "candidates.csv", candidate_rows(exp))
    point("report-candidates")
    front_rows = candidate_rows(exp, front)
    write_csv(run_dir / "front.csv", front_rows)
    point("report-front")
    history = hypervolume_history(exp)
    hv_vs_true = hypervolume_vs_exhaustive(exp, front)
    plot_pareto(run_dir / "pareto.png", exp, front)
    plot_hv(run_dir / "hv.png", history)
    point("report-plots")

    keys = [m.key for m in exp.metrics]
    unmeasured = exp.unmeasured()
    objectives = ", ".join(f"{m.key} ({m.goal}, {'estimated' if m.key in estimated else m.source})"
                           for m in exp.metrics if m.goal)
    budgets = ", ".join(b.text + (" (estimated)" if canonical_key(cfg, b.metric) in estimated else "")
                        for b in cfg.budgets) or "none"
    space = (f"supernet `{cfg.space.supernet}` (checkpoint `{cfg.space.checkpoint}`)" if cfg.space.supernet
             else f"tabular `{cfg.space.tabular_space}` (`{cfg.space.table}`)")
    lines = [
        f"# {cfg.name}",
        "",
        f"- space: {space}; dimensions: {', '.join(cfg.space.dimensions)}; "
        f"{exp.space.n_var} variables, {exp.space.size:.3g} sub-networks",
        f"- data: `{data_spec(cfg)}` " + (f"(accuracy on the `{cfg.accuracy_eval.split}` split)" if cfg.space.supernet
                                    else "(the table's accuracy)"),
        f"- devices: " + ", ".join(_device_text(d, exp.locations[d.name], cfg) for d in cfg.devices),
        f"- objectives: {objectives}",
        f"- budgets: {budgets}",
        f"- strategy: {cfg.strategy.name}, population {cfg.strategy.population}, "
        f"generations {cfg.strategy.generations}, seed {cfg.strategy.seed}; executor {cfg.executor.kind}",
        f"- evaluated: {len(cands)} distinct candidates in {wall_time_s:.1f} s; "
        f"{len(front)} on the front (feasible and non-dominated; "
        + (f"measured: {', '.join(k for k in keys if k not in unmeasured)}" if len(unmeasured) < len(keys)
           else "nothing measured") + ")",
    ]
    for key, why in unmeasured.items():
        lines.append(f"- predicted, not measured: {key}: {why}")
    if estimated:
        lines.append(f"- estimated: {', '.join(estimated)} are {ESTIMATE_NOTE}")
    for device, scale in exp.latency_scales().items():
        lines.append(f"- re-anchored: {device}'s reference sub-networks timed at the start of the run took "
                     f"{scale:.3f} x their time in the profile; its predicted latency is scaled by that")
    lines += [
        "",
        "## Pareto front",
        "",
    ]
    lines.append("| id | arch | " + " | ".join(keys) + " |")
    lines.append("|---|---|" + "---|" * len(keys))
    for r in front_rows:
        marks = {"measured": "", "estimated": " (est.)"}
        vals = [f"{_fmt(r[k])}{marks.get(r[k + '_source'], ' (pred.)')}" for k in keys]
        arch = r["arch"].replace("|", "\\|")  # a table cell cannot hold a bare pipe
        lines.append(f"| {r['id']} | `{arch}` | " + " | ".join(vals) + " |")
    lines += ["", "![Pareto front](pareto.png)", "", "## Hypervolume per generation", "",
              "| generation | candidates | hypervolume |", "|---|---|---|"]
    lines += [f"| {g} | {n} | {hv:.4f} |" for g, n, hv in history]
    lines += ["", "![Hypervolume](hv.png)", ""]
    if hv_vs_true is None and cfg.space.table is not None:
        lines += [f"No comparison with the exhaustive front: {exhaustive_obstacle(exp, front)}.", ""]
    if hv_vs_true is not None:
        lines += [f"Against the exhaustive front of the table (every architecture, same budgets): "
                  f"HV(found) / HV(true) = **{hv_vs_true:.4f}** (objectives normalised by the true "
                  f"front's ideal and nadir, reference point 1.1).", ""]
    path = run_dir / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    point("report-written")
    return path
