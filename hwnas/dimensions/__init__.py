"""Search dimensions: architecture, pruning, quantization - each one plug-in module (registry ``DIMENSIONS``).

A joint space is the product of the dimensions an experiment names (``space.dimensions``):
the supernet's architecture variables first, then each compression dimension's variables,
whose names carry the dimension's prefix (``prune.stage1``, ``quant.block5``). A genome
stays one int vector over the product; the decoded config is one flat dict, and it alone
says how a candidate becomes a model (:func:`hwnas.supernets.materialize`), so an export
of a stored config rebuilds the same compressed model.

The contract of a dimension (:class:`Dimension`, docs/ARCHITECTURE.md):

* ``name`` (the YAML entry), ``prefix`` (of its config keys), ``Options`` (its YAML block
  ``space.<name>``, pydantic, with defaults);
* ``neutral``: the option of its variables that leaves a unit as it is (``JointSpace.uncompressed``,
  ``JointSpace.uniform_compressions``);
* ``unsupported(supernet)``: why the supernet cannot do it (None: it can);
* ``variables(supernet)``: its :class:`~hwnas.space.Choice` variables in the joint space;
* ``restructure(model, values, units)`` (before BatchNorm recalibration: changes the layers)
  and ``deploy(model, values, units, calibration)`` (after: the form that ships);
* ``features(space, genomes, units, active)``: predictor columns for its genes (``space``: its own
  variables; ``units``: every unit the supernet names, ``active``: which of them each genome's
  architecture runs, so genes of switched-off blocks add no noise);
* ``cost_key(unit, values)``: its part of a unit's cost-model key (lookup tables, energy);
* ``acts_on(unit)``: the name of its variable that changes ``unit`` (None: none does), so a
  compressed lookup table (:mod:`hwnas.devices.lut`) times each unit under every option of it;
* ``describe(values, units)``: a short summary appended to the readable architecture string (its
  variables are result columns of their own, like every search variable: ``prune.stage1``).

``units`` are what compression acts on in an extracted sub-network (:class:`Unit`, from
``supernet.compression_units(config)``): the stem, every active block, the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from hwnas.errors import HwnasError
from hwnas.registry import Registry
from hwnas.space import Choice, SearchSpace

DIMENSIONS = Registry("dimension")


@dataclass(frozen=True)
class Unit:
    """A part of an extracted sub-network that compression acts on.

    ``name``: ``stem``, ``block<slot>`` (the supernet's slot number, as in ``ks<slot>``) or
    ``head``; ``stage``: the block's stage (None for stem and head); ``paths``: its
    modules' dotted names in the extracted model.
    """

    name: str
    stage: Optional[int]
    paths: Tuple[str, ...]

    @property
    def is_block(self) -> bool:
        return self.stage is not None


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dimension:
    """One searchable dimension (the module docstring states the contract)."""

    name: str = ""
    prefix: str = ""
    Options = Options
    neutral: Any = None  # the option of its variables that leaves a unit as it is (keep 1.0, fp32)

    def __init__(self, options: Optional[Options] = None):
        self.options = options if options is not None else self.Options()

    def unsupported(self, supernet) -> Optional[str]:
        return None

    def variables(self, supernet) -> List[Choice]:  # pragma: no cover - abstract
        raise NotImplementedError

    def restructure(self, model, values: Dict[str, Any], units: Sequence[Unit]):
        return model

    def deploy(self, model, values: Dict[str, Any], units: Sequence[Unit], calibration):
        return model

    def features(self, space: SearchSpace, genomes: np.ndarray, units: Sequence[Unit] = (),
                 active: Optional[np.ndarray] = None) -> np.ndarray:
        return space.features(genomes)

    def cost_key(self, unit: Unit, values: Dict[str, Any]) -> str:
        return ""

    def acts_on(self, unit: Unit) -> Optional[str]:
        return None

    def describe(self, values: Dict[str, Any], units: Sequence[Unit]) -> str:
        return ""

    # --- helpers shared by the dimensions ---------------------------------------------
    def own(self, config: Dict[str, Any]) -> Dict[str, Any]:
        """This dimension's part of a flat config."""
        head = self.prefix + "."
        return {k: v for k, v in config.items() if k.startswith(head)}

    def key(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"


def dimension(name: str, options: Optional[dict] = None) -> Dimension:
    cls = DIMENSIONS.get(name)
    return cls(cls.Options.model_validate(options or {}))


def names() -> List[str]:
    return DIMENSIONS.names()


def compression_of(config: Dict[str, Any]) -> List[Dimension]:
    """The compression dimensions a config has values for (default options: the values say it all)."""
    prefixes = {k.split(".", 1)[0] for k in config if "." in k}
    return [dimension(n) for n in DIMENSIONS.names() if DIMENSIONS.get(n).prefix in prefixes]


def units_of(supernet, config: Dict[str, Any]) -> List[Unit]:
    units = getattr(supernet, "compression_units", None)
    if units is None:
        raise HwnasError(f"supernet {supernet.registry_name!r} has no compression units (pruning, quantization)")
    return units(config)


class JointSpace:
    """The product of the architecture space and the compression dimensions' variables.

    ``space`` is what strategies and the store see (the supernet's own space when only
    architecture is searched, so arch-only runs and device profiles are unchanged).
    """

    def __init__(self, supernet, dimensions: Sequence[str] = ("architecture",),
                 options: Optional[Dict[str, dict]] = None):
        options = options or {}
        self.supernet = supernet
        self.parts: List[Tuple[Dimension, slice]] = []
        variables = list(supernet.space.variables)
        self.arch_slice = slice(0, len(variables))
        for name in dimensions:
            if name == "architecture":
                continue
            dim = dimension(name, options.get(name))
            why = dim.unsupported(supernet)
            if why is not None:
                raise HwnasError(f"dimension {name!r}: {why}")
            own = dim.variables(supernet)
            self.parts.append((dim, slice(len(variables), len(variables) + len(own))))
            variables += own
        if not self.parts:
            self.space = supernet.space
        else:
            self.space = SearchSpace(variables, name="x".join([supernet.space.name] + [d.name for d, _ in self.parts]))
            self.space.predictor_features = self.features  # hwnas.predictors.features.predictor_features
            self.space.ends = self.ends

    def uncompressed(self, genome) -> np.ndarray:
        """``genome`` with every compression gene at its dimension's ``neutral`` option where it has one:
        the same architecture, not compressed (a search's initial design starts from such ends too)."""
        g = np.array(genome, dtype=int)
        for dim, sl in self.parts:
            for j in range(sl.start, sl.stop):
                options = self.space.variables[j].options
                if dim.neutral in options:
                    g[j] = list(options).index(dim.neutral)
        return g

    def uniform_compressions(self, genome) -> List[np.ndarray]:
        """``genome`` uncompressed, then once per dimension and each of its other options: every gene of
        that dimension at the option, the rest uncompressed (the moves of a staged search, as starting
        points: keep 0.75 everywhere, int8 everywhere, ...)."""
        plain = self.uncompressed(genome)
        out = [plain]
        for dim, sl in self.parts:
            variables = self.space.variables[sl]
            shared = set(variables[0].options).intersection(*(v.options for v in variables[1:]))
            for option in (o for o in variables[0].options if o in shared and o != dim.neutral):
                g = plain.copy()
                g[sl] = [list(v.options).index(option) for v in variables]
                out.append(g)
        return out

    def ends(self) -> List[np.ndarray]:
        """The joint smallest and largest, then the smallest architecture uncompressed and compressed
        uniformly one dimension at a time. The joint smallest (every gene at its first option) is also the
        most compressed, and those small ends were what a staged search found and a joint one missed
        (benchmarks/joint_vs_staged.py). The largest architecture's uniform compressions as well were
        measured and not kept: no gain on joint_vs_staged (HV 1.147 with them vs 1.161 without, one run each)."""
        space = self.space
        return [space.smallest(), space.largest(), *self.uniform_compressions(space.smallest())]

    @property
    def dimensions(self) -> List[Dimension]:
        return [d for d, _ in self.parts]

    def features(self, genomes) -> np.ndarray:
        from hwnas.predictors.features import predictor_features

        G = np.atleast_2d(np.asarray(genomes, dtype=np.int64))
        cols = [predictor_features(self.supernet.space)(G[:, self.arch_slice])]
        units, active = self.active_units(G) if self.parts else ([], None)
        for dim, sl in self.parts:
            part = SearchSpace(self.space.variables[sl], name=dim.name)
            cols.append(np.asarray(dim.features(part, G[:, sl], units, active), dtype=np.float32))
        return np.concatenate(cols, axis=1)

    def active_units(self, genomes) -> Tuple[List[Unit], np.ndarray]:
        """Every unit the supernet names (stage known), and (n, units) bool: which each genome runs.

        Vectorised for supernets of stages with a depth gene ``d<i>`` and ``max_depth`` slots each
        (slot ``b`` runs when ``b % max_depth < d<b // max_depth>``); others decode row by row.
        """
        G = np.atleast_2d(np.asarray(genomes, dtype=np.int64))[:, self.arch_slice]
        net = self.supernet
        units = units_of(net, net.largest_config())
        arch = net.space.variables
        names = [v.name for v in arch]
        depth = getattr(net, "max_depth", None)
        if depth is not None and all(f"d{u.stage}" in names for u in units if u.is_block):
            out = np.ones((len(G), len(units)), dtype=bool)
            for j, u in enumerate(units):
                if u.is_block:
                    i = names.index(f"d{u.stage}")
                    slot = int(u.name.removeprefix("block"))
                    out[:, j] = np.asarray(arch[i].options)[G[:, i]] > slot % depth
            return units, out
        rows = [{u.name for u in units_of(net, net.space.decode(g))} for g in G]
        return units, np.array([[u.name in r for u in units] for r in rows], dtype=bool).reshape(len(G), len(units))

    def describe(self, config: Dict[str, Any]) -> str:
        arch = self.supernet.describe({k: v for k, v in config.items() if "." not in k})
        if not self.parts:
            return arch
        units = units_of(self.supernet, config)
        return "; ".join([arch] + [t for t in (d.describe(d.own(config), units) for d in self.dimensions) if t])


# --- experiment-file checks (hwnas.config calls them; each problem is one line) ---------------
def check_space_options(dimensions: Sequence[str], blocks: Dict[str, Any], tabular: bool) -> None:
    """``space.dimensions`` and the dimensions' blocks, as a pydantic validator (ValueError "key: why")."""
    from pydantic import ValidationError

    known = names()
    for d in dimensions:
        if d not in known:
            raise ValueError(f"dimensions: unknown dimension {d!r}; allowed: {', '.join(known)}")
    if "architecture" not in dimensions:
        raise ValueError("dimensions: must include 'architecture'")
    if len(set(dimensions)) != len(dimensions):
        raise ValueError("dimensions: a dimension is listed twice")
    if tabular and len(dimensions) > 1:
        raise ValueError("dimensions: a benchmark table holds architectures only; pruning and quantization "
                         "need a supernet; allowed: [architecture]")
    for key, block in blocks.items():
        if key not in known or key == "architecture":
            raise ValueError(f"{key}: unknown key (check the spelling; see docs/CONFIG.md for allowed keys)")
        if key not in dimensions:
            raise ValueError(f"{key}: options given, but {key!r} is not in space.dimensions")
        try:
            DIMENSIONS.get(key).Options.model_validate(block if block is not None else {})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join([key] + [str(p) for p in first["loc"]])
            msg = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                fields = ", ".join(DIMENSIONS.get(key).Options.model_fields)
                msg = f"unknown key; allowed: {fields}"
            raise ValueError(f"{where}: {msg}") from None


def check_experiment(cfg, path) -> None:
    """What the space's supernet and the devices must offer the searched dimensions (ConfigError)."""
    from hwnas.config import COST_METRICS, split_metric
    from hwnas.errors import ConfigError

    compression = [d for d in cfg.space.dimensions if d != "architecture"]
    if not compression:
        return
    from hwnas.supernets import checkpoint_path, create, load_checkpoint_header

    name, kwargs = load_checkpoint_header(checkpoint_path(cfg.space.checkpoint))
    supernet = create(name, **kwargs)
    for d in compression:
        why = dimension(d, cfg.space.dimension_options.get(d)).unsupported(supernet)
        if why is not None:
            raise ConfigError(path, "space.dimensions", f"{d}: {why}")
    options = cfg.space.dimension_options.get("quantization") or {}
    if "quantization" in compression and "int8" in dimension("quantization", options).options.precisions:
        for i, dev in enumerate(cfg.devices):
            if dev.backend not in ("onnxruntime-cpu", "table"):
                raise ConfigError(path, f"devices[{i}].backend", f"{dev.backend} cannot run int8 units (quantization "
                                  f"is searched); allowed: onnxruntime-cpu")
    from hwnas.config import device_space_name
    from hwnas.devices.predictors import compressed_table_problem
    from hwnas.devices.registry import find_device

    searched = {d: cfg.space.dimension_options.get(d) or {} for d in compression}
    keys = [(k, o.source) for k, o in cfg.objectives.items()] + [(b.metric, None) for b in cfg.budgets]
    for key, source in keys:
        metric = split_metric(key)[0]
        if metric not in COST_METRICS or (source == "measured" or (source is None and metric == "latency_ms")):
            continue
        if metric == "energy_mJ":
            continue  # counted from each candidate's own layers (hwnas.devices.energy.CandidateEnergy)
        profile = find_device(cfg.metric_device(key).name)
        if profile is None:
            continue  # (a device without a profile is refused with the other device checks)
        problem = compressed_table_problem(profile, device_space_name(cfg), searched, path)
        if problem is not None:
            raise ConfigError(path, f"objectives.{key}" if source else "budgets", problem)


# The shipped dimensions register themselves on import.
from . import architecture, pruning, quantization  # noqa: E402,F401
