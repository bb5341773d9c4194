"""The ``hwnas`` command line. User errors print one line and exit with code 2."""

from __future__ import annotations

import argparse
import os
import sys

# Idle OpenMP threads must sleep, not spin: on a shared CPU, spinning threads slow every
# torch call many times over. Set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path
from typing import List, Optional

from .errors import HwnasError

EXIT_USAGE = 2


def _execute(cfg, run_dir: Path, quiet: bool, generations: Optional[int] = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from .api import execute
    from .pipeline import run_status

    status = run_status(run_dir, cfg)
    # Finished means the report was written too: a run killed while writing it is resumed to write it.
    if status is not None and status["finished"] and generations is None and (run_dir / "report.md").is_file():
        print(f"{run_dir}: the run is finished ({status['candidates']} candidates, {status['generations']} "
              f"generations); nothing changed. 'hwnas resume {run_dir} --generations N' continues it to N "
              f"generations in all")
        return 0
    console = Console(stderr=True, quiet=quiet)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False, disable=quiet) as progress:
        task = progress.add_task(f"{cfg.name}: evaluating", total=None)
        run = execute(cfg, run_dir, progress=lambda n: progress.advance(task, n), generations=generations,
                      on_start=lambda total: progress.update(task, total=total))
    summary, front = run.summary, run.summary.front
    best = ", ".join(f"{m.key}{' (estimated)' if m.key in run.estimated else ''} "
                     f"{min(c.value(m.key) for c in front):.4g}–{max(c.value(m.key) for c in front):.4g}"
                     for m in run.metrics if m.goal) if front else "no feasible candidate"
    if not front and cfg.budgets:
        print(f"warning: no evaluated candidate meets {', '.join(b.text for b in cfg.budgets)}; the front is empty "
              f"(front.csv has the header only). Loosen the budgets or search longer.", file=sys.stderr)
    print(f"Searched {cfg.name} with {cfg.strategy.name}: {summary.n_candidates} distinct candidates evaluated "
          f"in {summary.wall_time_s:.1f} s; {summary.n_front} on the Pareto front "
          f"({'within ' + ', '.join(b.text for b in cfg.budgets) if cfg.budgets else 'no budgets'}) spanning "
          f"{best}{'; predicted, not measured: ' + ', '.join(run.unmeasured) if run.unmeasured else ''}. "
          f"Results in {run_dir}/ (front.csv, report.md, pareto.png, hv.png, results.sqlite).")
    return 0


def _checked(args):
    """The gate ``validate`` and ``run`` share: the file in full, then the run folder (nothing is made)."""
    from .config import load_config
    from .rundir import plan_run_dir

    cfg = load_config(args.config)
    run_dir = plan_run_dir(cfg, Path(args.config), Path(args.out) if args.out else None)
    if cfg.executor.kind == "ray" and cfg.executor.address:  # a cluster named in the file must answer (<= 30 s)
        from .errors import ConfigError
        from .executors import probe_ray

        try:
            probe_ray(cfg.executor.address)
        except HwnasError as err:
            raise ConfigError(args.config, "executor.address",
                              str(err).removeprefix("executor.address: ")) from None
    return cfg, run_dir


def _run_in(cfg, run_dir: Path, lock, created: bool, quiet: bool, generations: Optional[int] = None) -> int:
    from .rundir import holding

    with holding(lock, run_dir, created):
        return _execute(cfg, run_dir, quiet, generations=generations)


def cmd_run(args) -> int:
    from .rundir import start_run_dir

    cfg, run_dir = _checked(args)
    lock, created = start_run_dir(run_dir, Path(args.config))
    return _run_in(cfg, run_dir, lock, created, args.quiet)


def cmd_resume(args) -> int:
    from .rundir import resume_run_dir

    run_dir = Path(args.run_dir)
    cfg, lock = resume_run_dir(run_dir)
    return _run_in(cfg, run_dir, lock, False, args.quiet, generations=args.generations)


def cmd_validate(args) -> int:
    cfg, run_dir = _checked(args)
    print(f"{args.config}: valid ({cfg.name}: {len(cfg.objectives)} objectives, {len(cfg.budgets)} budgets, "
          f"{cfg.strategy.name}, {cfg.strategy.budget} evaluations; run folder {run_dir})")
    return 0


def _moved_example(path: Path) -> str:
    """An example's text with each relative path it reads that exists from the example's folder made
    absolute (comments kept), so the copy reads the same files from its new folder."""
    from .config import read_yaml, resolve_paths

    text = path.read_text(encoding="utf-8")
    raw = read_yaml(path)

    def leaves(value, prefix=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from leaves(v, f"{prefix}.{k}")
        else:
            yield prefix, value

    before, after = dict(leaves(raw)), dict(leaves(resolve_paths(raw, path.parent)))
    for key, old in before.items():
        new = after.get(key)
        if isinstance(old, str) and new != old and Path(new.partition(":")[2] if key == ".data" else new).exists():
            text = text.replace(old, new)
    return text


def cmd_examples(args) -> int:
    """The example experiments shipped inside the package; ``--copy DIR`` puts copies there to edit."""
    import shutil
    from importlib.resources import files

    examples = sorted((p for p in files("hwnas.experiments").iterdir() if p.name.endswith(".yaml")),
                      key=lambda p: p.name)
    if args.copy:
        target = Path(args.copy)
        if target.exists() and not target.is_dir():
            raise HwnasError(f"--copy: {target} is a file; give a folder")
        clash = [p.name for p in examples if (target / p.name).exists()]
        if clash:
            raise HwnasError(f"--copy: {target} already holds {', '.join(clash)}; choose another folder")
        target.mkdir(parents=True, exist_ok=True)
        for p in examples:
            (target / p.name).write_text(_moved_example(Path(str(p))), encoding="utf-8")
        print(f"copied {len(examples)} example experiments to {target}/ (paths they read made absolute where "
              f"they exist)")
        return 0
    for p in examples:
        first = next((line.lstrip("# ").strip() for line in p.read_text().splitlines() if line.startswith("#")), "")
        print(f"{p.name:28s} {first}\n{'':28s} {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="hwnas", description="Hardware-aware neural architecture search.")
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a search experiment from a YAML file")
    p.add_argument("config")
    p.add_argument("--out", help="run folder (default: the file's 'output' or runs/<name>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue a killed run without re-evaluating stored candidates")
    p.add_argument("run_dir")
    p.add_argument("--generations", type=int, metavar="N",
                   help="continue a finished run to N generations in all (a finished run is otherwise left as it is)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("examples", help="list the example experiments shipped with hwnas (or --copy them)")
    p.add_argument("--copy", metavar="DIR", help="copy them into DIR (created), to edit and run")
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser("validate", help="check an experiment YAML (the checks of 'run') without running it")
    p.add_argument("config")
    p.add_argument("--out", help="the run folder 'run --out' would be given, checked too")
    p.set_defaults(func=cmd_validate)

    from .cli_supernets import register as register_supernets

    register_supernets(sub)
    from .cli_devices import register as register_devices

    register_devices(sub)
    from .cli_export import register as register_export

    register_export(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HwnasError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted; 'hwnas resume RUN_DIR' continues a run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
