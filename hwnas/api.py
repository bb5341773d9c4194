"""The Python API: what the ``hwnas`` command line does, as functions (the CLI is a thin layer over them).

    import hwnas

    run = hwnas.run("experiments/quickstart.yaml", out="runs/qs")   # or a dict of the same keys
    run.front()            # pandas DataFrame: one column per search variable, objective and its source
    run = hwnas.load_run("runs/qs")
    run.candidates()       # every evaluated candidate, the rows of candidates.csv
    hwnas.resume("runs/qs", generations=20)   # continue a finished run to 20 generations
    hwnas.measure("experiments/quickstart.yaml", run.front().to_dict("records"), out="runs/given")  # no search

DataFrames need pandas (``pip install 'hwnas[pandas]'``); ``rows()`` gives the same as dicts.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import yaml

from .config import ExperimentConfig, load_config as _load_config_file
from .errors import HwnasError

ConfigSource = Union[str, Path, Dict, ExperimentConfig]


def load_config(source: Union[str, Path, Dict]) -> ExperimentConfig:
    """Validate an experiment from a YAML file (relative paths from its folder) or a dict of the same
    keys (relative paths from the current directory); any problem raises :class:`hwnas.errors.ConfigError`, one line."""
    if isinstance(source, dict):
        with tempfile.TemporaryDirectory(prefix="hwnas-config-") as tmp:
            return _load_config_file(_write_yaml(Path(tmp) / "config.yaml", source), base=Path.cwd())
    return _load_config_file(source)


def _write_yaml(path: Path, data: Dict) -> Path:
    try:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    except yaml.YAMLError as err:
        raise HwnasError(f"the experiment dict cannot be written as YAML: {err}") from None
    return path


class Run:
    """A run folder: its validated config, its store and the views written from it."""

    def __init__(self, path: Union[str, Path], config: Optional[ExperimentConfig] = None, summary=None):
        from .pipeline import load_run_config

        self.path = Path(path)
        self.config = config if config is not None else load_run_config(self.path)
        self.summary = summary  # the RunSummary of the call that ran it (None when loaded)
        self.unmeasured: Dict[str, str] = {}  # filled by the call that ran it (summary line of the CLI)
        self.estimated: List[str] = []
        self.metrics: List = []

    def _experiment(self):
        from .pipeline import Experiment

        return Experiment(self.config, self.path)

    def rows(self, front: bool = False) -> List[Dict]:
        """The rows of ``candidates.csv`` (or ``front.csv``), as dicts."""
        from .report import candidate_rows

        exp = self._experiment()
        try:
            return candidate_rows(exp, exp.front(measured_only=self.config.measure_front) if front else None)
        finally:
            exp.close()

    def candidates(self):
        """Every evaluated candidate as a DataFrame (the rows of ``candidates.csv``)."""
        return _dataframe(self.rows())

    def front(self):
        """The feasible non-dominated candidates as a DataFrame (the rows of ``front.csv``)."""
        return _dataframe(self.rows(front=True))

    def report(self) -> str:
        """The text of ``report.md``."""
        path = self.path / "report.md"
        if not path.is_file():
            raise HwnasError(f"{self.path}: no report.md yet (the run has not finished; 'hwnas resume {self.path}')")
        return path.read_text()

    def export(self, out: Union[str, Path], formats: str = "onnx", **options) -> List:
        """``hwnas export`` of this run: the chosen sub-networks (``pick=ID``, ``rank=N``/``by=METRIC`` or
        ``front=True``) written to ``out`` and parity-checked; a list of :class:`hwnas.export.Exported`
        (``folder``, ``info`` = model.json). ``hwnas.load(folder)`` gives the torch module back."""
        from .export import export

        return export(self.path, out, formats, **options)

    def evaluate(self, split: str = "test", **selection) -> List[Dict]:
        """``hwnas evaluate``: accuracy on ``split`` of the chosen sub-networks, rebuilt as searched."""
        from .export import evaluate

        return evaluate(self.path, split=split, **selection)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {self.config.name!r})"


def _dataframe(rows: List[Dict]):
    try:
        import pandas as pd
    except ImportError:
        raise HwnasError("DataFrames need pandas: pip install 'hwnas[pandas]' (or use .rows())") from None
    return pd.DataFrame(rows)


def execute(cfg: ExperimentConfig, run_dir: Path, progress: Optional[Callable[[int], None]] = None,
            generations: Optional[int] = None, on_start: Optional[Callable[[int], None]] = None) -> Run:
    """Search in ``run_dir`` (new or resumed) and write its report; ``progress(n)``: n more evaluated.

    ``on_start(total)`` is told how many evaluations to expect (again when measuring the front adds
    some). A finished run is left as it is
    unless ``generations`` continues it.
    """
    from .pipeline import Experiment
    from .report import write_report

    exp = Experiment(cfg, run_dir, progress=progress)
    try:
        if generations is not None:
            exp.continue_for(generations)
        if on_start is not None:
            on_start(exp.expected_evaluations())
            exp.on_total = on_start  # measuring the front adds to the total
        summary = exp.run()
        write_report(exp, summary.front, summary.wall_time_s)
        run = Run(run_dir, cfg, summary)
        run.unmeasured, run.estimated = exp.unmeasured(), exp.estimated_keys()
        run.metrics = exp.metrics
        return run
    finally:
        exp.close()


def run(config: ConfigSource, out: Union[str, Path, None] = None,
        progress: Optional[Callable[[int], None]] = None) -> Run:
    """Validate ``config`` (a path, a dict or an ExperimentConfig) and run it into ``out``
    (default: the file's ``output``, else ``runs/<name>-<time>``)."""
    from .rundir import holding

    cfg, run_dir, lock, created = _start(config, out)
    with holding(lock, run_dir, created):
        return execute(cfg, run_dir, progress)


def _start(config: ConfigSource, out):
    """Validate ``config`` and make its new run folder, locked: (cfg, run_dir, lock, created)."""
    from .rundir import plan_run_dir, start_run_dir

    with tempfile.TemporaryDirectory(prefix="hwnas-config-") as tmp:
        base = None  # a file's relative paths are from its folder; a dict's from the current directory
        if isinstance(config, (str, Path)):
            path = Path(config)
        else:
            base = Path.cwd()
            data = config.model_dump(mode="json", exclude_unset=True) if isinstance(config, ExperimentConfig) \
                else config
            path = _write_yaml(Path(tmp) / "config.yaml", data)
        cfg = _load_config_file(path, base=base)
        run_dir = plan_run_dir(cfg, path, Path(out) if out else None)
        lock, created = start_run_dir(run_dir, path, base)
    return cfg, run_dir, lock, created


def measure(config: ConfigSource, candidates: Sequence[Dict], out: Union[str, Path, None] = None,
            progress: Optional[Callable[[int], None]] = None) -> Run:
    """Measure the given ``candidates`` of ``config``'s space into a new run folder: no search.

    Each candidate is a flat config with a value for every search variable (a ``front.csv`` row does:
    values may be spelled as there, ``"0.5"`` for ``0.5``; other keys are ignored). Every measurable
    metric is measured for each (whatever its ``source`` in the file), so the folder's front is
    measured throughout; ``strategy`` is not used. What a staged pipeline's second stage needs
    (compress the front an architecture-only search found), and any "measure these" study.
    """
    from .pipeline import Experiment
    from .report import write_report
    from .rundir import holding

    cfg, run_dir, lock, created = _start(config, out)
    with holding(lock, run_dir, created):
        exp = Experiment(cfg, run_dir, progress=progress)
        try:
            start = time.time()
            genomes = np.array([_encode(exp.space, c, i) for i, c in enumerate(candidates)], dtype=int)
            exp.store.set_meta("given_candidates", len(genomes))
            exp.store.set_meta("status", "running")
            if len(genomes):
                exp.evaluate(genomes.reshape(len(genomes), exp.space.n_var), generation=0,
                             sources=exp._all_measured())
            exp.store.record_generation(0)
            exp.store.set_meta("status", "finished")
            wall = time.time() - start
            exp.store.set_meta("wall_time_s", wall)
            write_report(exp, exp.front(measured_only=True), wall)
            return Run(run_dir, cfg)
        finally:
            exp.close()


def _encode(space, config: Dict, index: int) -> np.ndarray:
    """A candidate's genome; its values as given or as a CSV spells them (``str`` of the option)."""
    values = {}
    for v in space.variables:
        if v.name not in config:
            raise HwnasError(f"candidates[{index}]: no value for {v.name!r} (every search variable needs one)")
        given = config[v.name]
        match = [o for o in v.options if o == given or str(o) == str(given)]
        if not match:
            raise HwnasError(f"candidates[{index}]: {v.name}={given!r} is not allowed; allowed: "
                             f"{', '.join(str(o) for o in v.options)}")
        values[v.name] = match[0]
    return space.encode(values)


def resume(path: Union[str, Path], generations: Optional[int] = None,
           progress: Optional[Callable[[int], None]] = None) -> Run:
    """Continue a killed run (stored candidates are answered from the store); a finished run is
    returned as it is unless ``generations`` (more than it has) continues it."""
    from .pipeline import run_status
    from .rundir import holding, resume_run_dir

    run_dir = Path(path)
    cfg, lock = resume_run_dir(run_dir)  # locked for the whole resume
    with holding(lock, run_dir, False):
        status = run_status(run_dir, cfg)
        # finished means its report was written too (a run killed while writing it is finished now)
        if status is not None and status["finished"] and generations is None and (run_dir / "report.md").is_file():
            return Run(run_dir, cfg)
        return execute(cfg, run_dir, progress, generations)


def load_run(path: Union[str, Path]) -> Run:
    """An existing run folder (finished or not), to read its candidates, front and report."""
    return Run(path)
