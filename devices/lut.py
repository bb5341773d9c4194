"""Once-for-all style lookup tables for elastic supernets: cost of every block choice.

A sub-network's cost is the sum of its parts: the stem at resolution ``r`` (including the
input resize), each active block slot with its kernel and expand ratio at ``r``, and the
head (last conv, pooling, classifier) at ``r``. The block input sizes follow from the
resolution and the slot's stage, never from the other choices.

How parts are timed (the table file's ``method``):

* ``alone`` (backends that only time whole models): each part is a module timed by itself,
  which leaves out the cache and allocator state of a real run.
* ``in-context`` (the default on torch backends, :class:`hwnas.devices.backends.SegmentTimer`): every part is
  timed inside a running network - a few covering sub-networks at full depth, each running
  every slot with another (kernel, expand) choice (a Latin square, so every choice of every
  slot at every resolution runs in ``CONTEXT_ROUNDS`` neighbourhoods); an entry is the
  statistic over its contexts. These parts add up to the whole network, but they carry the
  full-depth network's state into every sub-network, which the calibration below absorbs
  better than the errors of parts timed alone.

Either table is then calibrated on whole sub-networks measured with it
(:class:`hwnas.devices.predictors.SupernetCostModel`): one coefficient per stage (and one for
stem + head) plus a constant, fitted non-negatively, which absorbs what a per-part table cannot
see - e.g. the first, largest block of a full-depth network runs up to 3x slower than in a
shallower one (benchmarks/devices_lut.py compares the two timings).

Entry keys: ``stem@<r>``, ``head@<r>``, ``block<slot>_k<kernel>_e<expand>@<r>``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError

from .backends import STATISTICS
from .energy import Counts, count_model
from .spaces import SupernetDeviceSpace

LUT_FORMAT = 1
CONTEXT_ROUNDS = 2  # neighbourhoods each table entry is timed in (in-context tables)
IN_CONTEXT, ALONE = "in-context", "alone"  # how the entries were timed (the file's "method")
TIMING_METHODS = (ALONE, IN_CONTEXT)


class _Stem(nn.Module):
    def __init__(self, resolution: int, stem: nn.Module):
        super().__init__()
        self.resolution, self.stem = resolution, stem

    def forward(self, x):
        from hwnas.supernets.elastic_mbv3 import resize_input

        return self.stem(resize_input(x, self.resolution))


class _Head(nn.Module):
    def __init__(self, head: nn.Module, classifier: nn.Module):
        super().__init__()
        self.head, self.classifier = head, classifier

    def forward(self, x):
        return self.classifier(self.head(x).mean((2, 3)))


def _check_supported(dspace: SupernetDeviceSpace):
    net = dspace.supernet
    if not all(hasattr(net, a) for a in ("stem", "blocks", "head", "classifier", "active_blocks")):
        raise HwnasError(f"per-block lookup tables need an elastic MobileNetV3-style supernet "
                         f"(stem, blocks, head); {dspace.supernet_name!r} is not one")
    return net


def entry_key(part: str, resolution: int) -> str:
    return f"{part}@{resolution}"


def block_part(slot: int, kernel: int, expand: int) -> str:
    return f"block{slot}_k{kernel}_e{expand}"


@torch.no_grad()
def lut_parts(dspace: SupernetDeviceSpace) -> List[Tuple[str, Callable[[], nn.Module], Tuple[int, ...]]]:
    """Every (key, module factory, input shape) the table holds, in execution order."""
    net = _check_supported(dspace)
    kw = net.init_kwargs
    parts = []
    extracted: Dict[Tuple[int, int, int], nn.Module] = {}  # a block choice is the same module at every r

    def block_module(slot: int, k: int, e: int) -> nn.Module:
        if (slot, k, e) not in extracted:
            extracted[slot, k, e] = net.blocks[slot].extract(k, e)
        return extracted[slot, k, e]

    for r in kw["resolutions"]:
        stem = _Stem(r, net.stem).eval()
        parts.append((entry_key("stem", r), lambda stem=stem: stem, tuple(dspace.input_shape)))
        x = stem(torch.zeros(1, *dspace.input_shape))
        for slot in range(len(net.blocks)):
            shape = tuple(x.shape[1:])
            for k in kw["kernel_sizes"]:
                for e in kw["expand_ratios"]:
                    parts.append((entry_key(block_part(slot, k, e), r),
                                  lambda slot=slot, k=k, e=e: block_module(slot, k, e), shape))
            x = block_module(slot, kw["kernel_sizes"][0], kw["expand_ratios"][0])(x)
        head = _Head(net.head, net.classifier).eval()
        parts.append((entry_key("head", r), lambda head=head: head, tuple(x.shape[1:])))
    return parts


def active_parts(dspace: SupernetDeviceSpace, genome: Sequence[int]) -> List[str]:
    """The table keys whose sum is the cost of sub-network ``genome``."""
    net = dspace.supernet
    config = dspace.space.decode(genome)
    r = config["r"]
    blocks = [entry_key(block_part(b, k, e), r) for b, k, e in net.active_blocks(config)]
    return [entry_key("stem", r)] + blocks + [entry_key("head", r)]


def sum_parts(dspace: SupernetDeviceSpace, table: Dict[str, float], genomes) -> np.ndarray:
    return stage_sums(dspace, table, genomes).sum(axis=1)


def stage_sums(dspace: SupernetDeviceSpace, table: Dict[str, float], genomes) -> np.ndarray:
    """Per sub-network: the table summed over stem + head, then over each stage's blocks (columns)."""
    G = np.atleast_2d(np.asarray(genomes, dtype=np.int64))
    net = dspace.supernet
    out = np.zeros((len(G), 1 + net.num_stages))
    try:
        for row, g in zip(out, G):
            for key in active_parts(dspace, g):
                column = 0 if key.startswith(("stem", "head")) else 1 + int(key[5:key.index("_")]) // net.max_depth
                row[column] += table[key]
    except KeyError as err:
        raise HwnasError(f"lookup table of {dspace.name} has no entry {err.args[0]} "
                         "(measured for another supernet? re-run 'hwnas devices measure')") from None
    return out


def _counts(make: Callable[[], nn.Module], shape: Tuple[int, ...]) -> Dict[str, float]:
    c = count_model(make(), shape, batch_size=1)
    return {"macs": c.macs, "weight_values": c.weight_values, "activation_values": c.activation_values}


@lru_cache(maxsize=8)
def count_table(spec: str) -> Dict[str, Dict[str, float]]:
    """Work per entry for one image (computed here; ``measure`` stores it in the table file)."""
    from .spaces import device_space

    return {key: _counts(make, shape) for key, make, shape in lut_parts(device_space(spec))}


def energy_table(counts: Dict[str, Dict[str, float]], batch_size: int, precision: str) -> Dict[str, float]:
    """Estimated energy (mJ) per entry for one forward pass of ``batch_size`` images."""
    from .energy import energy_mJ

    return {key: energy_mJ(Counts(c["macs"], c["weight_values"], c["activation_values"]).batch(batch_size), precision)
            for key, c in counts.items()}


def macs_table(counts: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    return {key: c["macs"] for key, c in counts.items()}


def measure_table(dspace: SupernetDeviceSpace, backend, progress: Optional[Callable[[int, int], None]] = None,
                  method: str = ALONE) -> Dict[str, Dict[str, float]]:
    """Time every table entry on ``backend``: ``{key: {"latency_ms", "iqr_ms", counts}}`` (module docstring)."""
    if method not in TIMING_METHODS:
        raise HwnasError(f"unknown table timing {method!r}; allowed: {', '.join(TIMING_METHODS)}")
    if method == IN_CONTEXT and not getattr(backend, "times_segments", False):
        raise HwnasError(f"table timing {IN_CONTEXT!r} needs a backend that times inside a model (torch-cpu)")
    parts = lut_parts(dspace)
    if progress:
        progress(0, len(parts))
    if method == IN_CONTEXT:
        timed = _time_in_context(dspace, backend)
    else:
        measured = backend.measure_many([(make(), shape) for _, make, shape in parts])
        timed = {key: (m.latency_ms, m.iqr_ms) for (key, _, _), m in zip(parts, measured)}
    if progress:
        progress(len(parts), len(parts))
    return {key: {"latency_ms": timed[key][0], "iqr_ms": timed[key][1], **_counts(make, shape)}
            for key, make, shape in parts}


def covering_configs(net, rounds: int = CONTEXT_ROUNDS) -> List[dict]:
    """Full-depth configs in which every (slot, kernel, expand) runs ``rounds`` times at every resolution.

    Round ``j`` gives slot ``b`` of config ``c`` the choice ``(c + b * (j + 1)) mod n``, so each
    slot cycles through all ``n`` choices once per round, next to different neighbours.
    """
    kw = net.init_kwargs
    choices = [(k, e) for k in kw["kernel_sizes"] for e in kw["expand_ratios"]]
    configs = []
    for j in range(rounds):
        for r in kw["resolutions"]:
            for c in range(len(choices)):
                config = {f"d{i}": kw["max_depth"] for i in range(net.num_stages)}
                config["r"] = r
                for b in range(len(net.blocks)):
                    config[f"ks{b}"], config[f"e{b}"] = choices[(c + b * (j + 1)) % len(choices)]
                configs.append(config)
    return configs


def _time_in_context(dspace: SupernetDeviceSpace, backend) -> Dict[str, Tuple[float, float]]:
    """Entry -> (statistic over its contexts, IQR over its contexts)."""
    net = dspace.supernet
    items, keys = [], []
    for config in covering_configs(net):
        sub = net.extract(config)
        # segments: stem (to the first block), each block, head (from the head conv to the output)
        items.append((sub, dspace.input_shape, list(sub.blocks) + [sub.head]))
        keys.append(active_parts(dspace, dspace.space.encode(config)))
    per_entry: Dict[str, List[float]] = {}
    for names, m in zip(keys, backend.measure_many(items)):
        for name, value in zip(names, m.segments_ms):
            per_entry.setdefault(name, []).append(value)
    statistic = STATISTICS[getattr(backend, "statistic", "median")]
    return {key: (float(statistic(v)), float(np.subtract(*np.percentile(v, [75, 25]))))
            for key, v in per_entry.items()}


def lut_document(dspace: SupernetDeviceSpace, entries: Dict[str, Dict[str, float]], backend_settings: dict,
                 method: str) -> str:
    """The ``lut-<space>.json`` text: entries plus what they were measured for and how (``method``)."""
    net = dspace.supernet
    return json.dumps({"format": LUT_FORMAT, "space": dspace.name, "supernet": net.registry_name, "method": method,
                       "supernet_kwargs": _jsonable(net.init_kwargs), "input_shape": list(dspace.input_shape),
                       "backend": backend_settings, "entries": entries}, indent=1)


def _read_table(path, dspace: SupernetDeviceSpace, what: str, version: int, remeasure: str) -> dict:
    """A table document (``what``: how errors name it), checked for its format ``version`` and against the
    space's supernet; ``remeasure``: the command that makes a fitting one."""
    try:
        doc = json.loads(open(path).read())
    except (OSError, json.JSONDecodeError) as err:
        raise HwnasError(f"cannot read {what} {path}: {err}") from None
    if doc.get("format") != version:
        raise HwnasError(f"{path}: {what} format {doc.get('format')} (expected {version})")
    if doc.get("supernet_kwargs") != _jsonable(dspace.supernet.init_kwargs):
        raise HwnasError(f"{path}: measured for a supernet of another shape than {dspace.name}; re-run {remeasure}")
    return doc


def read_lut(path, dspace: SupernetDeviceSpace) -> Tuple[Dict[str, Dict[str, float]], str]:
    """Entries and timing method of a ``lut-<space>.json``, checked against the space's supernet."""
    doc = _read_table(path, dspace, "lookup table", LUT_FORMAT, "'hwnas devices measure'")
    return doc["entries"], doc.get("method", ALONE)


def _jsonable(kwargs: dict) -> dict:
    return json.loads(json.dumps(kwargs, default=list))


# --------------------------------------------------------------------------- compressed tables
# A space searched with compression dimensions (pruning, quantization) has a table of its own,
# ``lut-compressed-<space>.json``: every part under every option of the variables acting on it
# (Dimension.acts_on), keyed by the architecture key plus the dimensions' cost keys, e.g.
# ``block3_k5_e4_p0.75_int8@20``, ``stem_int8@16`` (keep 1.0 and fp32 add nothing, so those
# keys are the architecture table's). int8 is measured, never derived from fp32: onnxruntime's
# int8 is slower than fp32 for some blocks. The file also holds its calibration samples: whole
# compressed sub-networks (their flat configs) timed on the same backend.
COMPRESSED_FORMAT = 1
COMPRESSED = "lut-compressed"  # the file prefix (profile.file(COMPRESSED, space, "json"))
CALIBRATION_IMAGES = 8  # random inputs setting BatchNorm statistics / int8 ranges: neither changes the layers


class _Block(nn.Module):
    """One extracted block where a sub-network has it (``blocks.0``), so a unit's paths apply."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.blocks = nn.Sequential(block)  # as in MobileNetV3Subnet: the same ONNX node scopes

    def forward(self, x):
        return self.blocks(x)


def compression_dimensions(options: Dict[str, dict]):
    """The compression dimensions named in ``options`` (name -> their choices), in registry order."""
    from hwnas.dimensions import dimension, names

    return [dimension(n, options[n]) for n in names() if n in options and n != "architecture"]


def normalized_options(dimensions: Sequence[str], options: Optional[Dict[str, dict]] = None) -> Dict[str, dict]:
    """``{dimension: its choices with defaults filled in}`` for the compression dimensions listed."""
    from hwnas.dimensions import dimension

    options = options or {}
    return {d: dimension(d, options.get(d)).options.model_dump()
            for d in dimensions if d != "architecture"}


def _variants(supernet, dims, unit) -> List[Dict[str, object]]:
    """Every combination of the options of the variables acting on ``unit`` (values dicts)."""
    variants: List[Dict[str, object]] = [{}]
    for dim in dims:
        name = dim.acts_on(unit)
        if name is None:
            continue
        options = next(v.options for v in dim.variables(supernet) if v.name == name)
        variants = [{**v, name: o} for v in variants for o in options]
    return variants


def _suffix(dims, unit, values) -> str:
    return "".join(d.cost_key(unit, d.own(values)) for d in dims)


def _int8_paths(dims, units, values) -> List[str]:
    return [p for d in dims if hasattr(d, "int8_paths") for p in d.int8_paths(d.own(values), units)]


@torch.no_grad()
def compressed_parts(dspace: SupernetDeviceSpace, options: Dict[str, dict]):
    """``(models, entries)``: a factory per distinct part model (``model id -> () -> ONNX bytes``,
    free image size where one model serves every resolution) and ``(key, model id, input shape)`` per entry."""
    import copy

    from hwnas.dimensions import Unit

    from hwnas.dimensions.quantization import onnx_scope

    from .onnx import quantize_int8, to_onnx

    net = _check_supported(dspace)
    dims = compression_dimensions(options)
    kw = net.init_kwargs
    rng = torch.Generator().manual_seed(0)
    models: Dict[str, Callable[[], bytes]] = {}
    entries: List[Tuple[str, str, Tuple[int, ...]]] = []

    def add(model_id, part, unit, values, shape, dynamic):
        def build(part=part, unit=unit, values=values, shape=shape):
            model = copy.deepcopy(part()).eval()
            for dim in dims:
                model = dim.restructure(model, dim.own(values), [unit])
            example = torch.randn(CALIBRATION_IMAGES, *shape, generator=rng)
            onnx_bytes = to_onnx(model, example[:1], dynamic_batch=True, dynamic_size=dynamic)
            paths = _int8_paths(dims, [unit], values)
            return quantize_int8(onnx_bytes, [example], [onnx_scope(p) for p in paths]) if paths else onnx_bytes
        models.setdefault(model_id, build)

    for r in kw["resolutions"]:
        stem = _Stem(r, net.stem).eval()
        unit = Unit("stem", None, ("stem",))
        for values in _variants(net, dims, unit):  # the resize is part of it: one model per resolution
            key = entry_key("stem" + _suffix(dims, unit, values), r)
            add(key, lambda stem=stem: stem, unit, values, tuple(dspace.input_shape), False)
            entries.append((key, key, tuple(dspace.input_shape)))
        x = stem(torch.zeros(1, *dspace.input_shape))
        for slot in range(len(net.blocks)):
            shape = tuple(x.shape[1:])
            unit = Unit(f"block{slot}", slot // net.max_depth, ("blocks.0",))
            for k in kw["kernel_sizes"]:
                for e in kw["expand_ratios"]:
                    for values in _variants(net, dims, unit):
                        part = block_part(slot, k, e) + _suffix(dims, unit, values)
                        add(part, lambda slot=slot, k=k, e=e: _Block(net.blocks[slot].extract(k, e)), unit, values,
                            shape, True)
                        entries.append((entry_key(part, r), part, shape))
            x = net.blocks[slot].extract(kw["kernel_sizes"][0], kw["expand_ratios"][0])(x)
        head = _Head(net.head, net.classifier).eval()
        unit = Unit("head", None, ("head", "classifier"))
        for values in _variants(net, dims, unit):
            part = "head" + _suffix(dims, unit, values)
            add(part, lambda head=head: head, unit, values, tuple(x.shape[1:]), True)
            entries.append((entry_key(part, r), part, tuple(x.shape[1:])))
    return models, entries


def measure_compressed_table(dspace: SupernetDeviceSpace, backend, options: Dict[str, dict],
                             progress: Optional[Callable[[str], None]] = None,
                             warmup_repeats: int = 3) -> Dict[str, Dict[str, float]]:
    """Time every compressed-table entry alone on ``backend`` (onnxruntime): ``{key: {latency_ms, iqr_ms}}``.

    One session per distinct part model (a block choice under one keep ratio and precision serves
    all resolutions); a short pass over every entry first, discarded (the first timings of a fresh
    process come out off, see :func:`hwnas.devices.measure.measure_job`).
    """
    from .onnx import session

    if not hasattr(backend, "measure_sessions"):
        raise HwnasError("a lookup table of compressed parts needs the onnxruntime-cpu backend "
                         "(int8 units run as onnxruntime QDQ models)")
    models, entries = compressed_parts(dspace, options)
    sessions = {}
    for i, (model_id, build) in enumerate(models.items()):
        if progress and i % 25 == 0:
            progress(f"compressed lookup table: building part {i}/{len(models)}")
        sessions[model_id] = session(build(), backend.threads)
    items = [(sessions[model_id], shape) for _, model_id, shape in entries]
    if progress:
        progress(f"compressed lookup table: timing {len(entries)} entries")
    saved = backend.repeats, backend.max_repeats
    backend.repeats = backend.max_repeats = warmup_repeats
    try:
        backend.measure_sessions(items)
    finally:
        backend.repeats, backend.max_repeats = saved
    measured = backend.measure_sessions(items)
    return {key: {"latency_ms": m.latency_ms, "iqr_ms": m.iqr_ms} for (key, _, _), m in zip(entries, measured)}


def compressed_unit_keys(dspace: SupernetDeviceSpace, config: Dict[str, object]) -> List[Tuple[str, Optional[int], bool]]:
    """``(table key, stage or None for stem/head, int8?)`` of every unit ``config`` runs (a flat joint config)."""
    from hwnas.dimensions import compression_of, units_of

    net = dspace.supernet
    dims = compression_of(config)
    r = config["r"]
    choice = {f"block{b}": (k, e) for b, k, e in net.active_blocks(config)}
    out = []
    for unit in units_of(net, config):
        base = block_part(int(unit.name[5:]), *choice[unit.name]) if unit.is_block else unit.name
        int8 = any(d.precision(unit, d.own(config)) == "int8" for d in dims if hasattr(d, "precision"))
        out.append((entry_key(base + _suffix(dims, unit, config), r), unit.stage, int8))
    return out


def compressed_columns(dspace: SupernetDeviceSpace, table: Dict[str, float], configs) -> np.ndarray:
    """Per config: the table summed over stem + head and each stage's blocks, for fp32 units, then the same
    for int8 units, then 1 (the columns a compressed cost model is calibrated on)."""
    n_groups = 1 + dspace.supernet.num_stages
    out = np.zeros((len(configs), 2 * n_groups + 1))
    out[:, -1] = 1.0
    try:
        for row, config in zip(out, configs):
            for key, stage, int8 in compressed_unit_keys(dspace, config):
                row[(0 if stage is None else 1 + stage) + n_groups * int8] += table[key]
    except KeyError as err:
        raise HwnasError(f"compressed lookup table of {dspace.name} has no entry {err.args[0]} (measured for other "
                         "keep ratios or precisions? re-run 'hwnas devices measure' with --dimensions)") from None
    return out


def compressed_document(dspace: SupernetDeviceSpace, options: Dict[str, dict], entries: Dict[str, Dict[str, float]],
                        samples: List[dict], backend_settings: dict) -> str:
    """The ``lut-compressed-<space>.json`` text: entries, the dimensions' choices, calibration samples."""
    net = dspace.supernet
    return json.dumps({"format": COMPRESSED_FORMAT, "space": dspace.name, "supernet": net.registry_name,
                       "method": ALONE, "supernet_kwargs": _jsonable(net.init_kwargs),
                       "input_shape": list(dspace.input_shape), "dimensions": options, "backend": backend_settings,
                       "entries": entries, "samples": samples}, indent=1)


def read_compressed(path, dspace: SupernetDeviceSpace) -> dict:
    """A ``lut-compressed-<space>.json`` document, checked against the space's supernet."""
    return _read_table(path, dspace, "compressed lookup table", COMPRESSED_FORMAT,
                       "'hwnas devices measure' with --dimensions")


def uncovered(doc: dict, options: Dict[str, dict]) -> Optional[str]:
    """What of the searched ``options`` (normalized) a compressed table does not hold (None: it holds all)."""
    have = doc.get("dimensions", {})
    for name, choices in options.items():
        if name not in have:
            return f"no {name}"
        for field, values in choices.items():
            missing = [v for v in values if v not in have[name].get(field, [])]
            if missing:
                return f"{name} {field} {', '.join(map(str, missing))} not measured"
    return None
