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


def read_lut(path, dspace: SupernetDeviceSpace) -> Tuple[Dict[str, Dict[str, float]], str]:
    """Entries and timing method of a ``lut-<space>.json``, checked against the space's supernet."""
    try:
        doc = json.loads(open(path).read())
    except (OSError, json.JSONDecodeError) as err:
        raise HwnasError(f"cannot read lookup table {path}: {err}") from None
    if doc.get("format") != LUT_FORMAT:
        raise HwnasError(f"{path}: lookup table format {doc.get('format')} (expected {LUT_FORMAT})")
    if doc.get("supernet_kwargs") != _jsonable(dspace.supernet.init_kwargs):
        raise HwnasError(f"{path}: measured for a supernet of another shape than {dspace.name}; "
                         "re-run 'hwnas devices measure'")
    return doc["entries"], doc.get("method", ALONE)


def _jsonable(kwargs: dict) -> dict:
    return json.loads(json.dumps(kwargs, default=list))
