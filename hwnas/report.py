"""Views of a run written from its store: CSVs, hypervolume history, plots and report.md."""

from __future__ import annotations

import csv
import json
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
            source = c.source(m.key) or "unknown"  # no value: the table (or measurement) has none
            row[f"{m.key}_source"] = "estimated" if source == "predicted" and m.key in estimated else source
        row["eval_seconds"] = round(c.wall_time_s, 4)
        rows.append(row)
    return rows


def write_csv(path: Path, rows: List[Dict], fields: Sequence[str] = ()) -> None:
    """Rows as CSV; with no rows, the header (``fields``) alone, so an empty front is still a valid file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        fields = list(rows[0]) if rows else list(fields)
        if fields:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(path)  # never leave a half-written view behind


HV_NOTE = ("hypervolume: the fraction of the box between fixed bounds per objective that the front dominates "
           "(objectives scaled so the best bound is 0 and the worst 1, clipped, reference point the worst bounds), "
           "in [0, 1]; the bounds are stored in the run")


def hv_bounds(exp) -> Dict[str, List[float]]:
    """Per objective ``[best, worst]`` (its own units), fixed once per run and stored in its meta.

    A table space: the range of the feasible architectures of the whole table. Otherwise
    accuracy [1, 0]; a cost [0, its budget], or [0, the largest feasible value of the run]
    without a budget (a maximised metric other than accuracy: [largest, 0]).
    """
    stored = exp.store.get_meta("hv_bounds")
    if stored is not None:
        return stored
    objectives = [m for m in exp.metrics if m.goal]
    every = exp.space_backend.exhaustive()
    rows = [r for r in every if (budget_slack([r], exp.cfg) <= 0).all()] if every else []
    if not rows:
        rows = [exp._effective(c) for c in exp.store.candidates()]
        rows = [r for r in rows if all(r[m.key] is not None for m in exp.metrics)
                and (budget_slack([r], exp.cfg) <= 0).all()]
    bounds = {}
    for m in objectives:
        values = [r[m.key] for r in rows]
        if every and values:
            lo, hi = min(values), max(values)
            bounds[m.key] = [hi, lo] if m.goal == "max" else [lo, hi]
            continue
        if m.metric == "accuracy":
            bounds[m.key] = [1.0, 0.0]
            continue
        limits = [b.value for b in exp.cfg.budgets if canonical_key(exp.cfg, b.metric) == m.key and b.op == "<="]
        top = min(limits) if limits and m.goal == "min" else (max(values) if values else 1.0)
        bounds[m.key] = [top, 0.0] if m.goal == "max" else [0.0, top]
    if rows:  # only once something could fix them
        exp.store.set_meta("hv_bounds", bounds)
    return bounds


def hypervolume_history(exp) -> List[tuple]:
    """(generation, candidates so far, HV in [0, 1], HV ratio to the exhaustive front or None) per generation.

    HV by the run's fixed bounds (:func:`hv_bounds`); the ratio (table spaces) normalises by
    the exhaustive front's ideal and nadir, reference 1.1, as benchmarks/search_nb201.py does.
    """
    from hwnas.search import bounded_hypervolume, hv_ratio, nondominated

    cands = [c for c in exp.store.candidates() if all(c.value(m.key) is not None for m in exp.metrics)]
    gens = np.array([c.generation for c in cands])
    finished = exp.store.finished_generations()
    if not cands:
        return [(g, 0, 0.0, None) for g in finished]
    rows = [exp._effective(c) for c in cands]
    feasible = (budget_slack(rows, exp.cfg) <= 0).all(axis=1)
    F = objective_matrix(rows, exp.metrics)
    bounds = hv_bounds(exp)
    objectives = [m for m in exp.metrics if m.goal]
    ideal = np.array([bounds[m.key][0] * m.sign for m in objectives])
    nadir = np.array([bounds[m.key][1] * m.sign for m in objectives])
    F_true = _exhaustive_objectives(exp)
    history = []
    for g in finished:
        mask = feasible & (gens >= 0) & (gens <= g)
        front = F[mask][nondominated(F[mask])] if mask.any() else F[:0]
        ratio = hv_ratio(front, F_true) if F_true is not None and len(front) else (0.0 if F_true is not None else None)
        history.append((g, int(((gens >= 0) & (gens <= g)).sum()), bounded_hypervolume(front, ideal, nadir), ratio))
    return history


def _exhaustive_objectives(exp):
    every = exp.space_backend.exhaustive()
    if not every:
        return None
    feasible = (budget_slack(every, exp.cfg) <= 0).all(axis=1)
    if not feasible.any():
        return None
    return objective_matrix([r for r, ok in zip(every, feasible) if ok], exp.metrics)


def hypervolume_vs_exhaustive(exp, front: Sequence[Candidate]):
    """HV(found front) / HV(true front) where the space can be enumerated (complete tables), in [0, 1]."""
    from hwnas.search import hv_ratio

    F_true = _exhaustive_objectives(exp)
    if F_true is None or not front:
        return None
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
        g, _, hv, ratio = zip(*history)
        ax.plot(g, hv, "-o", label="hypervolume (fixed bounds)")
        if any(r is not None for r in ratio):
            ax.plot(g, [np.nan if r is None else r for r in ratio], "-s", label="HV / HV(exhaustive front)")
        ax.legend(fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("generation (0 = initial samples)")
    ax.set_ylabel("in [0, 1]")
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
    rows = candidate_rows(exp)
    write_csv(run_dir / "candidates.csv", rows)
    point("report-candidates")
    front_rows = candidate_rows(exp, front)
    write_csv(run_dir / "front.csv", front_rows, fields=list(rows[0]) if rows else ())
    point("report-front")
    history = hypervolume_history(exp)
    hv_vs_true = hypervolume_vs_exhaustive(exp, front)
    plot_pareto(run_dir / "pareto.png", exp, front)
    plot_hv(run_dir / "hv.png", history)
    write_hv_json(run_dir / "hv.json", exp, history, hv_vs_true)
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
        (f"- strategy: none, {exp.store.get_meta('given_candidates')} given candidates measured (hwnas.measure); "
         if exp.store.get_meta("given_candidates") is not None else
         f"- strategy: {strategy_text(cfg.strategy)}, budget {cfg.strategy.budget} evaluations, seed {cfg.strategy.seed}; ")
        + f"executor {cfg.executor.kind}",
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
    if not front:
        lines += ["", f"**No evaluated candidate meets the budgets ({budgets})**: the front is empty.", ""]
    with_ratio = any(r is not None for *_, r in history)
    lines += ["", "![Pareto front](pareto.png)", "", "## Hypervolume per generation", "",
              f"{HV_NOTE}: " + ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in hv_bounds(exp).items())
              + (" (the range of the whole table)." if with_ratio else "."), "",
              "| generation | candidates | hypervolume |" + (" HV / HV(exhaustive) |" if with_ratio else ""),
              "|---|---|---|" + ("---|" if with_ratio else "")]
    lines += [f"| {g} | {n} | {hv:.4f} |" + (f" {_fmt(r)} |" if with_ratio else "") for g, n, hv, r in history]
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


def strategy_text(s) -> str:
    if s.name == "optuna":
        return f"optuna ({s.sampler} sampler)"
    if s.name == "linas":
        return f"linas (batch {s.linas_batch}, NSGA-II {s.linas_population} x {s.linas_generations} on predictions)"
    return f"{s.name}, population {s.population}"


def write_hv_json(path: Path, exp, history, hv_vs_true) -> None:
    """The same hypervolume figures as report.md and hv.png, for scripts."""
    doc = {"normalisation": HV_NOTE, "bounds": hv_bounds(exp),
           "history": [{"generation": g, "candidates": n, "hypervolume": hv, "hv_ratio_vs_exhaustive": r}
                       for g, n, hv, r in history],
           "hv_ratio_vs_exhaustive": hv_vs_true}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
