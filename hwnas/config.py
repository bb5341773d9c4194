"""Experiment configuration: a YAML file validated before anything runs.

Every problem is reported as one line naming the file, the key path and what is
allowed (:class:`hwnas.errors.ConfigError`); the CLI turns it into exit code 2.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, HwnasError

METRICS = ("accuracy", "latency_ms", "energy_mJ", "power_W", "params", "flops")
COST_METRICS = ("latency_ms", "energy_mJ", "power_W")  # depend on a device
DIMENSIONS = ("architecture", "pruning", "quantization")
STRATEGIES = ("nsga2", "random", "optuna", "linas")
BACKENDS = ("torch-cpu",)
TABULAR_SPACES = ("nb201", "fbnet", "ofa_mbv3")
#: data -> the accuracy column of a benchmark table (NB201 has all three; FBNet and OFA tables none).
TABLE_ACCURACY = {"cifar10": "cifar10_acc", "cifar100": "cifar100_acc", "imagenet16": "imagenet16_acc"}
TABLE_DATA = tuple(TABLE_ACCURACY)


MAX_NAME = 100  # an experiment's name becomes part of a folder name


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpaceConfig(_Model):
    """A supernet by name and checkpoint, or a tabular benchmark table.

    Besides the keys below, each searched compression dimension may have its own block named
    after it (``pruning: {keep: [...]}``, ``quantization: {precisions: [...]}``), validated by
    the dimension's module (:mod:`hwnas.dimensions`).
    """

    model_config = ConfigDict(extra="allow", frozen=True)  # the dimensions' blocks; checked below

    supernet: Optional[str] = None
    checkpoint: str = "default"
    table: Optional[str] = None
    tabular_space: Optional[Literal["nb201", "fbnet", "ofa_mbv3"]] = None
    dimensions: List[str] = ["architecture"]
    # NB201 cells whose output is not connected to the input (341 of 15625: chance accuracy,
    # near-zero latency) are never evaluated ("exclude"), or searched like any other ("include").
    degenerate: Literal["exclude", "include"] = "exclude"

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.supernet is None) == (self.table is None):
            raise ValueError("give exactly one of 'supernet' (a registered name) or 'table' (a benchmark CSV)")
        if self.table is not None and self.tabular_space is None:
            raise ValueError("a 'table' needs 'tabular_space' (one of nb201, fbnet, ofa_mbv3)")
        from hwnas.dimensions import check_space_options

        check_space_options(self.dimensions, self.model_extra or {}, tabular=self.table is not None)
        return self

    @property
    def dimension_options(self) -> Dict[str, Any]:
        """The dimensions' own blocks (``{"pruning": {"keep": [...]}}``) as given."""
        return dict(self.model_extra or {})


MEASURING_BACKENDS = ("torch-cpu", "onnxruntime-cpu", "torch-cuda")


class DeviceConfig(_Model):
    # The registry's device-name rule: a name is a profile folder, never a path.
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    # How measured costs are taken: a backend on this machine, or "table" (a benchmark table's values).
    # Predicted costs come from the device's profile (hwnas devices add/measure).
    # onnxruntime: what a CPU deployment runs (ONNX), and the only backend that runs int8 units.
    backend: Literal["torch-cpu", "onnxruntime-cpu", "torch-cuda", "table"] = "onnxruntime-cpu"
    batch_size: int = Field(default=1, ge=1, le=4096)
    threads: int = Field(default=1, ge=1, le=256)
    warmup: int = Field(default=3, ge=0, le=1000)
    repeats: int = Field(default=15, ge=3, le=10000)
    # "cpu": the timing thread's CPU time (needs threads: 1); "min": the statistic that
    # reproduces on a shared CPU (see hwnas.devices.backends).
    clock: Literal["wall", "cpu"] = "wall"
    statistic: Literal["min", "median"] = "min"
    # Latency predicted from a lookup table measured on this machine: re-time the profile's 10
    # reference sub-networks when the run starts and scale the predictions by how far the
    # machine has moved since (a shared CPU drifts by +-5 %). "auto": when the profile was
    # measured here, with a backend that runs here.
    reanchor: Union[bool, Literal["auto"]] = "auto"

    @model_validator(mode="after")
    def _cpu_clock_single_thread(self):
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError("clock 'cpu' times one thread; it needs threads: 1")
        return self


class ObjectiveConfig(_Model):
    goal: Literal["min", "max"]
    source: Literal["measured", "predicted"] = "measured"
    device: Optional[str] = None


class OperatorConfig(_Model):
    """pymoo's SBX crossover / polynomial mutation: distribution index, probability, per-gene probability."""

    eta: float = Field(gt=0, le=1000)
    prob: float = Field(default=1.0, ge=0, le=1)
    prob_var: Optional[float] = Field(default=None, ge=0, le=1)  # None: pymoo's default (0.5 SBX, 1/genes PM)


class StrategyConfig(_Model):
    name: Literal["nsga2", "random", "optuna", "linas"] = "nsga2"
    population: int = Field(default=24, ge=2, le=100000)
    generations: int = Field(default=10, ge=1, le=100000)
    # The budget: distinct candidates evaluated (each measured where the file says measured;
    # predictions a strategy screens with are free). Default: population x generations.
    evaluations: Optional[int] = Field(default=None, ge=1, le=10000000)
    seed: int = Field(default=0, ge=0)
    # Candidates measured before the search to fit the predictors of predicted objectives.
    initial_samples: int = Field(default=40, ge=4, le=100000)
    # NSGA-II's operators (nsga2, and linas's search on the predictions).
    crossover: OperatorConfig = OperatorConfig(eta=15, prob=0.9)
    mutation: OperatorConfig = OperatorConfig(eta=20)
    # optuna: which of its samplers.
    sampler: Literal["tpe", "nsga2", "gp", "random"] = "tpe"
    # linas: candidates measured per round, and NSGA-II's population and generations on the predictions.
    linas_batch: int = Field(default=10, ge=1, le=100000)
    # linas: at most this many random candidates (beside the smallest and largest) start it, at most a fifth of the budget.
    linas_initial: int = Field(default=20, ge=2, le=100000)
    linas_population: int = Field(default=100, ge=4, le=100000)
    linas_generations: int = Field(default=4, ge=1, le=10000)
    # linas picks by predicted value minus this many standard deviations of the surrogate's trees.
    linas_optimism: float = Field(default=0.5, ge=0, le=10)
    # A run folder whose measured candidates this run starts from (not counted against the budget).
    warm_start: Optional[str] = None

    @property
    def budget(self) -> int:
        return self.evaluations if self.evaluations is not None else self.population * self.generations


class ExecutorConfig(_Model):
    kind: Literal["local", "ray"] = "local"
    address: Optional[str] = None  # None: start a local Ray; "auto": join a running cluster
    workers: int = Field(default=2, ge=1, le=4096)

    @model_validator(mode="after")
    def _address_only_for_ray(self):
        if self.kind == "local" and self.address is not None:
            raise ValueError("'address' is only allowed with kind: ray")
        return self


class AccuracyEvalConfig(_Model):
    split: Literal["val", "test"] = "val"
    calib_images: int = Field(default=1000, ge=0, le=1000000)
    # A fixed, seeded subset of the split (0: all of it): a cheaper, equally repeatable measurement.
    images: int = Field(default=0, ge=0, le=10000000)


class Budget(_Model):
    metric: str
    op: Literal["<=", ">="]
    value: float

    @property
    def text(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class DataConfig(_Model):
    """A data set and its preprocessing (hwnas.supernets.datasets); ``data: KIND:PATH`` is short for it."""

    kind: Literal["fmnist-mini", "fashion-mnist", "mnist", "cifar10", "cifar100", "image-folder"]
    path: Optional[str] = None
    size: Optional[int] = Field(default=None, ge=4, le=1024)  # resize to size x size
    channels: Optional[Literal[1, 3]] = None  # default: the data set's own (IDX 1, CIFAR and image folders 3)
    mean: Optional[List[float]] = None  # per channel, on pixels in [0, 1]
    std: Optional[List[float]] = None
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)  # image folders without val/ or test/
    test_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _statistics(self):
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and (len(values) not in (1, self.channels or 3) or
                                       (name == "std" and min(values) <= 0)):
                raise ValueError(f"{name}: one value per channel{', each > 0' if name == 'std' else ''}")
        return self


class ExperimentConfig(_Model):
    name: str = Field(default="experiment", min_length=1, max_length=MAX_NAME)
    space: SpaceConfig
    data: Union[str, DataConfig] = "fmnist-mini"  # a table: its accuracy column (cifar10, cifar100, imagenet16)
    devices: List[DeviceConfig] = [DeviceConfig(name="local-cpu")]
    objectives: Dict[str, ObjectiveConfig]
    budgets: List[Budget] = []
    strategy: StrategyConfig = StrategyConfig()
    executor: ExecutorConfig = ExecutorConfig()
    accuracy_eval: AccuracyEvalConfig = AccuracyEvalConfig()
    measure_front: bool = True  # re-measure every front member whose objectives were predicted
    output: Optional[str] = None

    @field_validator("objectives", mode="before")
    @classmethod
    def _short_objectives(cls, value):
        # `accuracy: max` is short for `accuracy: {goal: max}`.
        if isinstance(value, dict):
            return {k: ({"goal": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @field_validator("budgets", mode="before")
    @classmethod
    def _parse_budgets(cls, value):
        if isinstance(value, dict):  # {latency_ms: "<= 15"} or {latency_ms: 15}
            value = [f"{k} {v}" if isinstance(v, str) else f"{k} <= {v}" for k, v in value.items()]
        if not isinstance(value, list):
            return value
        return [_parse_budget(v, i) if isinstance(v, str) else v for i, v in enumerate(value)]

    @field_validator("devices")
    @classmethod
    def _some_device(cls, value):
        if not value:
            raise ValueError("give at least one device (leave 'devices' out for this machine's CPU, local-cpu)")
        return value

    @model_validator(mode="after")
    def _cross_checks(self):
        names = [d.name for d in self.devices]
        if len(set(names)) != len(names):
            raise ValueError("devices: a device name is listed twice")
        if not self.objectives:
            raise ValueError("objectives: give at least one objective")
        seen: Dict[str, str] = {}
        for key in self.objectives:  # `latency_ms` is `latency_ms@<first device>`: one metric, two names
            same = seen.setdefault(self.canonical(key), key)
            if same != key:
                raise ValueError(f"objectives.{key}: names the same metric as objectives.{same}; keep one of them")
        for key, obj in self.objectives.items():
            metric, device = split_metric(key)
            where = f"objectives.{key}"
            if metric not in METRICS:
                raise ValueError(f"{where}: unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
            if device is not None and device not in names:
                raise ValueError(f"{where}: device {device!r} is not in devices ({', '.join(names)})")
            if metric in ("energy_mJ", "power_W") and obj.source != "predicted":
                raise ValueError(f"{where}: {metric} comes from the device's profile; set source: predicted")
        if self.space.table is not None:
            for key in list(self.objectives) + [b.metric for b in self.budgets]:
                metric = split_metric(key)[0]
                if metric == "accuracy" and self.data not in TABLE_DATA:
                    raise ValueError(f"data: a table's accuracy is for one of {', '.join(TABLE_DATA)}; got {self.data!r}")
                if metric == "params":  # energy_mJ, power_W: predicted from the device's profile
                    raise ValueError(f"objectives.{key}: not in benchmark tables; allowed: accuracy, latency_ms, "
                                     "flops, energy_mJ, power_W")
        if len(self.objectives) < 2:
            raise ValueError("objectives: a multi-objective search needs at least two objectives")
        for i, b in enumerate(self.budgets):
            metric, device = split_metric(b.metric)
            if metric not in METRICS:
                raise ValueError(f"budgets[{i}]: unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
            if device is not None and device not in names:
                raise ValueError(f"budgets[{i}]: device {device!r} is not in devices ({', '.join(names)})")
            if not math.isfinite(b.value) or (metric != "accuracy" and b.value <= 0):
                raise ValueError(f"budgets[{i}]: {b.text} can never hold; give a positive finite value")
            if metric == "accuracy" and not 0 < b.value <= 1:
                raise ValueError(f"budgets[{i}]: accuracy is a fraction in (0, 1], got {b.value:g}")
        return self

    def canonical(self, key: str) -> str:
        """``metric@device`` with the device made explicit (cost metrics), else the metric."""
        metric, device = split_metric(key)
        return f"{metric}@{device or self.devices[0].name}" if metric in COST_METRICS else metric

    def metric_device(self, key: str) -> Optional[DeviceConfig]:
        """The device an objective/budget key refers to (its `@device`, else the first)."""
        metric, device = split_metric(key)
        if metric not in COST_METRICS:
            return None
        name = device or self.devices[0].name
        return next(d for d in self.devices if d.name == name)


_BUDGET_RE = re.compile(r"^\s*([A-Za-z_][\w@.\-]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def _parse_budget(text: str, index: int) -> Dict[str, Any]:
    m = _BUDGET_RE.match(text)
    if not m:
        raise ValueError(f"budgets[{index}]: {text!r} is not of the form 'metric <= number' or 'metric >= number'")
    return {"metric": m.group(1), "op": m.group(2), "value": float(m.group(3))}


def split_metric(key: str):
    """``latency_ms@pixel3`` -> (``latency_ms``, ``pixel3``); ``accuracy`` -> (``accuracy``, None)."""
    metric, _, device = key.partition("@")
    return metric, (device or None)


def _format_error(err: Dict[str, Any]) -> tuple[str, str]:
    loc = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-"))
    msg = err.get("msg", "invalid value")
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return loc, "unknown key (check the spelling; see docs/CONFIG.md for allowed keys)"
    if kind == "missing":
        return loc, "required key is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        # Our cross-field messages carry their own key path as "path: message".
        head, sep, tail = msg.partition(": ")
        if sep and re.fullmatch(r"[\w@.\[\]\-]+", head):
            return (head if not loc or head.startswith(loc) else f"{loc}.{head}"), tail
    if kind == "literal_error":
        msg = msg.replace("Input should be", "allowed:")
    msg = msg.replace("Input should be", "must be").replace("greater than or equal to", ">=").replace(
        "less than or equal to", "<=")
    return loc, msg


def validate_model(model, data: Any, path: Union[str, Path], keys: str):
    """Validate a YAML document against a pydantic model; the first problem as one ConfigError line."""
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"the file must hold a YAML mapping of keys ({keys})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        key, msg = _format_error(exc.errors()[0])
        raise ConfigError(path, key, msg) from None


#: Bounds of an experiment file: far above any real one, far below what exhausts a parser.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_ALIASES = 100


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML lets the last one win silently) and bounds
    nesting and aliases (a deeply nested file would end in a RecursionError)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_YAML_ALIASES} aliases",
                                                  self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class gives the error
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (each key once)",
                                                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)



def read_yaml(path: Union[str, Path]) -> Any:
    """Parse a YAML file strictly; a missing, oversized or broken file is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "no such file" if not path.exists() else "not a regular file")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(path, "", f"{size} bytes; an experiment file may hold at most {MAX_YAML_BYTES}")
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(path, "", f"{where}{problem} (not valid YAML)") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "", "not a UTF-8 text file") from None
    except (OSError, RecursionError) as exc:
        raise ConfigError(path, "", f"cannot read: {type(exc).__name__}: {exc}") from None


def parse_config(data: Any, path: Union[str, Path] = "<config>") -> ExperimentConfig:
    return validate_model(ExperimentConfig, data, path, "name, space, objectives, ...")


def _absolute(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value.strip():
        return value
    path = Path(value).expanduser()
    return value if path.is_absolute() else os.path.normpath(base / path)


def resolve_paths(raw: Any, base: Union[str, Path]) -> Any:
    """``raw`` (a parsed experiment or training file) with the paths it reads made absolute from ``base``.

    The files a config reads (``space.table``, a ``space.checkpoint`` path, the data's folder,
    ``strategy.warm_start``) are relative to the config file's folder, so an example runs from any
    directory; what a run writes (``output``, a training file's ``out``) is relative to the current
    directory, like ``--out``. Values of the wrong type are left for validation to name.
    """
    from hwnas.supernets import SHIPPED_CHECKPOINTS

    if not isinstance(raw, dict):
        return raw
    base = Path(base).resolve()
    out = dict(raw)
    space = out.get("space")
    if isinstance(space, dict):
        space = dict(space)
        if "table" in space:
            space["table"] = _absolute(space["table"], base)
        checkpoint = space.get("checkpoint")
        if isinstance(checkpoint, str) and checkpoint not in SHIPPED_CHECKPOINTS:
            space["checkpoint"] = _absolute(checkpoint, base)
        out["space"] = space
    data = out.get("data")
    if isinstance(data, str) and ":" in data:
        kind, _, folder = data.partition(":")
        out["data"] = f"{kind}:{_absolute(folder, base)}"
    elif isinstance(data, dict) and "path" in data:
        out["data"] = {**data, "path": _absolute(data["path"], base)}
    strategy = out.get("strategy")
    if isinstance(strategy, dict) and "warm_start" in strategy:
        out["strategy"] = {**strategy, "warm_start": _absolute(strategy["warm_start"], base)}
    return out


def load_config(path: Union[str, Path], base: Union[str, Path, None] = None) -> ExperimentConfig:
    """Read and validate an experiment YAML; raise ConfigError (one line) on any problem.

    The gate of ``hwnas validate``, ``run`` and ``resume``: every check that does not need
    the search itself (files read in full, names resolved, cost models built), so a file
    that passes fails later only for what cannot be known before (a cluster, a disk).
    Relative paths the file reads are taken from ``base`` (default: the file's folder).
    """
    path = Path(path)
    cfg = parse_config(resolve_paths(read_yaml(path), path.parent if base is None else base), path)
    check_references(cfg, path)
    cfg = with_profile_settings(cfg, path)
    check_runnable(cfg, path)
    from hwnas.dimensions import check_experiment

    check_experiment(cfg, path)
    return cfg


def device_space_name(cfg: ExperimentConfig) -> str:
    """How device profiles name the experiment's space (``hwnas devices ... --space``)."""
    if cfg.space.supernet is None:
        return cfg.space.tabular_space
    return cfg.space.supernet + ("" if cfg.space.checkpoint == "default" else f":{cfg.space.checkpoint}")


def metric_sources(cfg: ExperimentConfig) -> Dict[str, tuple]:
    """Every metric the run evaluates: the key as written -> (metric, device or None, source)."""
    out = {}
    for key, obj in cfg.objectives.items():
        out[key] = obj.source
    for b in cfg.budgets:
        metric = split_metric(b.metric)[0]
        out.setdefault(b.metric, "predicted" if metric in ("energy_mJ", "power_W") else "measured")
    return {key: (split_metric(key)[0], (cfg.metric_device(key).name if cfg.metric_device(key) else None), source)
            for key, source in out.items()}


def _where(cfg: ExperimentConfig, key: str) -> str:
    return f"objectives.{key}" if key in cfg.objectives else \
        f"budgets[{next(i for i, b in enumerate(cfg.budgets) if b.metric == key)}]"


def check_runnable(cfg: ExperimentConfig, path: Union[str, Path]) -> None:
    """What the run will ask of the table, the devices and the cost models, asked now."""
    from hwnas.devices.registry import find_device

    if cfg.space.table is not None:
        _check_table(cfg, path)
    check_devices(cfg, path)
    for key, (metric, device, source) in metric_sources(cfg).items():
        profile = find_device(device) if device is not None and source == "predicted" else None
        if profile is not None:
            _check_cost_model(cfg, path, _where(cfg, key), profile, metric)


def _check_cost_model(cfg, path, where: str, profile, metric: str) -> None:
    """The device's cost model is built (and fitted) now, as the run will build it."""
    from hwnas.devices import cost_model

    joint = None
    compression = [d for d in cfg.space.dimensions if d != "architecture"]
    if compression and metric == "energy_mJ":
        return  # counted from each candidate's own layers (hwnas.devices.energy.CandidateEnergy), no table
    if compression:  # a compression search predicts from the profile's compressed table
        from hwnas.devices.predictors import compressed_table_problem

        options = {d: cfg.space.dimension_options.get(d) or {} for d in compression}
        try:
            problem = compressed_table_problem(profile, device_space_name(cfg), options, path)
        except HwnasError as err:  # an unreadable table file
            problem = str(err)
        if problem is not None:
            raise ConfigError(path, where, problem)
    try:
        if compression:  # its joint genomes, as the run has them
            from hwnas.dimensions import JointSpace
            from hwnas.supernets import checkpoint_path, load_checkpoint

            joint = JointSpace(load_checkpoint(checkpoint_path(cfg.space.checkpoint)), cfg.space.dimensions,
                               cfg.space.dimension_options)
        model = cost_model(profile, device_space_name(cfg), joint=joint)
    except HwnasError as err:
        raise ConfigError(path, where, f"device {profile.name!r} cannot predict {metric}: {err}") from None
    if metric not in model.metrics:
        raise ConfigError(path, where, f"device {profile.name!r} has no {metric} model for this space (it has: "
                                       f"{', '.join(model.metrics) or 'none'}); measure {metric} on it or drop it")


def _check_table(cfg: ExperimentConfig, path: Union[str, Path]):
    """The whole table read now (gzip integrity, columns, types, rows); the accuracy column the data needs."""
    from hwnas.tabular import TabularBenchmark

    try:
        bench = TabularBenchmark.load(cfg.space.tabular_space, cfg.space.table)
    except HwnasError as err:
        raise ConfigError(path, "space.table", str(err)) from None
    name = Path(cfg.space.table).name
    wants_accuracy = any(split_metric(k)[0] == "accuracy" for k in metric_sources(cfg))
    column = TABLE_ACCURACY.get(cfg.data)
    if wants_accuracy and column not in bench.columns:
        have = [c for c in bench.columns if c.endswith("_acc")]
        raise ConfigError(path, "data", f"{name} has no accuracy column for {cfg.data!r} ({column}); it has "
                                        + (f"accuracy for {', '.join(c[:-4] for c in have)}" if have else
                                           "no accuracy columns at all (remove the accuracy objective and "
                                           "budgets, or give a table with accuracies)"))
    return bench


def device_locations(cfg: ExperimentConfig) -> Dict[str, Any]:
    """Device name -> :class:`hwnas.devices.location.Location` (here, or external: predicted only)."""
    from hwnas.devices.location import locate

    table_devices = None
    if cfg.space.table is not None:
        from .tabular import TabularBenchmark

        table_devices = TabularBenchmark.load(cfg.space.tabular_space, cfg.space.table).devices
    return {d.name: locate(d.name, d.backend, table_devices) for d in cfg.devices}


def check_devices(cfg: ExperimentConfig, path: Union[str, Path]) -> None:
    """Every cost metric can be had: measured on a device that is here, or predicted by a model.

    An external device (a profile only) is never timed here, so its costs must be predicted,
    and its profile must cover the experiment's space.
    """
    from hwnas.devices.predictors import SAME_KEYS_AS

    locations = device_locations(cfg)
    space = device_space_name(cfg)
    table = Path(cfg.space.table).name if cfg.space.table else None
    for i, d in enumerate(cfg.devices):
        loc = locations[d.name]
        if not loc.here and loc.profile is None:
            raise ConfigError(path, f"devices[{i}].name", f"{d.name!r} is neither a column of {table} nor a device "
                                                          f"profile; add it with 'hwnas devices add {d.name} --space "
                                                          f"{space} --samples FILE.csv' or name a column")
        if not loc.here and "backend" in d.model_fields_set and d.backend in MEASURING_BACKENDS:
            raise ConfigError(path, f"devices[{i}].backend",
                              f"{d.name!r} is an external device ({loc.where}): it is never timed here; remove "
                              f"'backend', or measure this machine under its own name ('hwnas devices measure')")
    uses = [(f"objectives.{k}", k, o.source) for k, o in cfg.objectives.items()]
    uses += [(f"budgets[{i}]", b.metric, None) for i, b in enumerate(cfg.budgets)]
    for where, key, source in uses:
        metric, _ = split_metric(key)
        device = cfg.metric_device(key)
        if device is None:
            continue
        loc = locations[device.name]
        if source == "measured" and not loc.here:
            raise ConfigError(path, where, f"device {device.name!r} is external ({loc.where}); its {metric} can "
                                           "only be predicted: set source: predicted")
        predicted = source == "predicted" or metric in ("energy_mJ", "power_W") or not loc.here
        if not predicted:
            continue
        profile = loc.profile
        if profile is None:
            if metric == "energy_mJ" and cfg.space.supernet is not None:
                continue  # counted from each candidate's own layers (hwnas.devices.energy.CandidateEnergy)
            if metric in ("energy_mJ", "power_W"):
                make = (f"hwnas devices measure {device.name} --space {space}" if cfg.space.supernet
                        else f"hwnas devices add {device.name} --space {space} --samples FILE.csv")
                raise ConfigError(path, where, f"{metric} comes from a device profile and {device.name!r} has none; "
                                               f"make one with '{make}'")
            continue  # predicted by a model fitted on the run's measured initial samples
        covered = profile.has_space(space) or profile.file("lut", space, "json").is_file() or (
            cfg.space.supernet is not None and SAME_KEYS_AS.get(cfg.space.supernet) in profile.spaces)
        if not covered:
            raise ConfigError(path, where, f"device {device.name!r} has no samples for space {space} (it has: "
                                           f"{', '.join(profile.spaces) or 'none'}); add them with 'hwnas devices add "
                                           f"{device.name} --space {space} --samples FILE.csv'")


#: Device-block settings a measured profile supplies when the experiment does not set them.
PROFILE_SETTINGS = ("backend", "batch_size", "threads", "clock", "statistic")


def with_profile_settings(cfg: ExperimentConfig, path: Union[str, Path]) -> ExperimentConfig:
    """Take unset device settings from the device's profile when a local backend measured it.

    The profile's cost model predicts latency as its backend timed it (batch, threads, clock,
    statistic); a run measuring the same device otherwise would time it differently and
    measured and predicted values would disagree. Settings the file gives win.
    """
    from hwnas.devices.measure import profile_obstacle
    from hwnas.devices.registry import find_device

    devices = []
    for i, device in enumerate(cfg.devices):
        profile = find_device(device.name)
        if device.reanchor is True:
            obstacle = profile_obstacle(profile.spec) if profile is not None else f"no profile {device.name!r}"
            if obstacle is not None:
                raise ConfigError(path, f"devices[{i}].reanchor",
                                  f"{obstacle}, so its references cannot be re-timed here; allowed: auto, false")
        # Only a device measured here (this host, or its Ray node) is timed in a run, so only its settings matter.
        if profile is None or profile.spec.backend not in MEASURING_BACKENDS or (
                profile_obstacle(profile.spec) is not None and not profile.spec.ray_resource):
            devices.append(device)
            continue
        inherited = {k: getattr(profile.spec, k) for k in PROFILE_SETTINGS
                     if k not in device.model_fields_set and getattr(profile.spec, k, None) is not None}
        try:
            devices.append(DeviceConfig.model_validate({**inherited, **device.model_dump(include=device.model_fields_set)}))
        except ValidationError as exc:
            key, msg = _format_error(exc.errors()[0])
            raise ConfigError(path, f"devices[{i}]" + (f".{key}" if key else ""),
                              f"{msg} (with the settings {inherited} of profile {device.name!r})") from None
    return cfg.model_copy(update={"devices": devices})


def check_references(cfg: ExperimentConfig, path: Union[str, Path]) -> None:
    """Names and files the config refers to must exist (checked before anything runs)."""
    if cfg.space.supernet is not None:
        from hwnas.supernets import SHIPPED_CHECKPOINTS, checkpoint_path
        from hwnas.supernets import names as supernet_names

        known = supernet_names()
        if cfg.space.supernet not in known:
            raise ConfigError(path, "space.supernet", f"unknown supernet {cfg.space.supernet!r}; allowed: {', '.join(known)}")
        if not checkpoint_path(cfg.space.checkpoint).is_file():
            raise ConfigError(path, "space.checkpoint", f"no such file {cfg.space.checkpoint!r}; give a path or a "
                                                        f"shipped checkpoint ({', '.join(SHIPPED_CHECKPOINTS)})")
        spec = _data_spec(cfg, path)
        if spec.path and not Path(spec.path).expanduser().is_dir():
            key = "data" if isinstance(cfg.data, str) else "data.path"
            raise ConfigError(path, key, f"no such folder {spec.path!r}; {spec.kind} reads a local folder")
        _check_checkpoint(cfg, path, spec)
        _check_data(cfg, path, spec)
    elif not Path(cfg.space.table).is_file():
        raise ConfigError(path, "space.table", f"no such file {cfg.space.table!r}")
    warm = cfg.strategy.warm_start
    if warm is not None and not ((Path(warm) / "results.sqlite").is_file() and (Path(warm) / "config.yaml").is_file()):
        raise ConfigError(path, "strategy.warm_start", f"{warm!r} is not a run folder (needs config.yaml and "
                                                       "results.sqlite)")


def data_spec(cfg: ExperimentConfig):
    """The experiment's data as :func:`hwnas.supernets.datasets.load_dataset` takes it (a string or a dict)."""
    return cfg.data if isinstance(cfg.data, str) else cfg.data.model_dump(exclude_none=True)


def _check_data(cfg: ExperimentConfig, path: Union[str, Path], spec) -> None:
    """The data read now (IDX files in full, CIFAR batches, an image folder's listing): an empty folder
    or a truncated file is found by validate, not by the first measurement of a run."""
    from hwnas.supernets.datasets import VAL_SIZE, load_dataset, read_idx_folder

    key = "data" if isinstance(cfg.data, str) else "data.path"
    try:
        if spec.kind in ("fashion-mnist", "mnist"):  # read without making tensors: cheap enough to do twice
            train = read_idx_folder(Path(spec.path).expanduser())["train"][0]
            if len(train) <= VAL_SIZE:
                raise HwnasError(f"{spec.path}: only {len(train)} training images; need more than {VAL_SIZE} "
                                 f"for a val split")
        elif spec.kind != "fmnist-mini":
            load_dataset(data_spec(cfg))
    except HwnasError as err:
        raise ConfigError(path, key, str(err)) from None


def _data_spec(cfg: ExperimentConfig, path: Union[str, Path]):
    from hwnas.supernets.datasets import parse_spec

    try:
        return parse_spec(data_spec(cfg))
    except HwnasError as err:
        raise ConfigError(path, "data", str(err).removeprefix("data: ")) from None


def _check_checkpoint(cfg: ExperimentConfig, path: Union[str, Path], spec) -> None:
    """The checkpoint holds the named supernet, and that supernet takes as many channels as the data gives."""
    from hwnas.supernets.datasets import NATURAL_CHANNELS

    from hwnas.supernets import SHIPPED_CHECKPOINTS, checkpoint_path, load_checkpoint

    try:  # built and loaded in full: constructor arguments and weight shapes are checked too
        net = load_checkpoint(checkpoint_path(cfg.space.checkpoint))
    except HwnasError as err:
        raise ConfigError(path, "space.checkpoint", str(err)) from None
    name, kwargs = net.registry_name, dict(net.init_kwargs)
    if name != cfg.space.supernet:
        mend = (f"give a checkpoint file of {cfg.space.supernet} (from 'hwnas supernet train' or 'hwnas supernet "
                f"import')" if cfg.space.checkpoint in SHIPPED_CHECKPOINTS else f"name {name!r} in space.supernet")
        raise ConfigError(path, "space.checkpoint", f"{cfg.space.checkpoint} holds a {name!r} supernet, not "
                                                    f"{cfg.space.supernet!r}; {mend}")
    channels = spec.channels or NATURAL_CHANNELS[spec.kind]
    if kwargs.get("in_chans", 1) != channels:
        raise ConfigError(path, "space.checkpoint", f"{cfg.space.checkpoint} takes {kwargs['in_chans']}-channel "
                                                    f"images but data {spec.kind} gives {channels}; set data: "
                                                    f"{{kind: {spec.kind}, channels: {kwargs['in_chans']}}} or use "
                                                    f"data with {kwargs['in_chans']} channels (cifar10, image-folder)")
