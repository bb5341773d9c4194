"""Analytical energy (and power) estimate for devices without an energy meter - label: ``estimated``.

    energy = MACs x E_mac(precision) + DRAM bytes x E_dram_byte

Figures from M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, Table/Fig. for a 45 nm process at 0.9 V:

* 32-bit float: multiply 3.7 pJ + add 0.9 pJ  -> 4.6 pJ per MAC
* 16-bit float: multiply 1.1 pJ + add 0.4 pJ  -> 1.5 pJ per MAC (bf16 taken the same)
* 8-bit int:    multiply 0.2 pJ + add 0.03 pJ -> 0.23 pJ per MAC
* DRAM: about 640 pJ per 32-bit word          -> 160 pJ per byte

Memory traffic model (an upper-bound style count, no on-chip reuse across layers): every
conv / linear layer reads its weights and its input from DRAM and writes its output to
DRAM once per forward pass of the batch. Newer processes are more efficient, so the
figures rank architectures by energy better than they predict a given chip's joules;
values derived this way are always labelled ``estimated``. Power = energy / latency.

The counts come from :func:`count_model` on a torch model (supernet spaces, per lookup-table
entry) or, for the tabular spaces, from :meth:`hwnas.tabular.TabularSpace.counts`, which
walks the same layers analytically (equal to :func:`count_model` on the built networks;
``tests/test_tabular.py``). The fields of :class:`Counts` may be arrays (one per architecture).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError

ESTIMATED = "estimated"
# picojoules per multiply-accumulate, Horowitz ISSCC 2014 (45 nm)
MAC_PJ = {"fp32": 3.7 + 0.9, "fp16": 1.1 + 0.4, "bf16": 1.1 + 0.4, "int8": 0.2 + 0.03}
DRAM_PJ_PER_BYTE = 640.0 / 4  # 640 pJ per 32-bit DRAM word
BYTES_PER_VALUE = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


@dataclass(frozen=True)
class Counts:
    """Work of one forward pass of a batch: multiply-accumulates and values moved to/from DRAM."""

    macs: float
    weight_values: float
    activation_values: float

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.macs + other.macs, self.weight_values + other.weight_values,
                      self.activation_values + other.activation_values)

    def batch(self, batch_size: int) -> "Counts":
        """One image's work -> a batch's: the weights are read once per batch, the rest scales."""
        return Counts(self.macs * batch_size, self.weight_values, self.activation_values * batch_size)


def _check_precision(precision: str) -> None:
    if precision not in MAC_PJ:
        raise HwnasError(f"unknown precision {precision!r} for the energy estimate; allowed: {', '.join(MAC_PJ)}")


def energy_mJ(counts: Counts, precision: str = "fp32") -> float:
    """Estimated energy of one forward pass, in millijoules."""
    _check_precision(precision)
    dram_bytes = (counts.weight_values + counts.activation_values) * BYTES_PER_VALUE[precision]
    picojoules = counts.macs * MAC_PJ[precision] + dram_bytes * DRAM_PJ_PER_BYTE
    return picojoules * 1e-9


def power_W(energy_mj: float, latency_ms: float) -> float:
    return energy_mj / latency_ms  # mJ / ms = W


@torch.no_grad()
def count_model(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> Counts:
    """MACs and DRAM values of one forward pass of a batch, over its conv and linear layers.

    MACs follow the usual convention (also :mod:`hwnas.tabular`'s): output elements x
    input channels per group x kernel area for a conv, x input features for a linear
    layer; batch norm, activations and element-wise ops are not counted.
    """
    return sum(count_by_precision(model, input_shape, batch_size).values(), Counts(0.0, 0.0, 0.0))


@torch.no_grad()
def count_by_precision(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1,
                       int8_paths: Sequence[str] = ()) -> Dict[str, Counts]:
    """:func:`count_model` split by the precision each layer runs at.

    A quantized candidate (:class:`hwnas.dimensions.quantization.QuantizedModel`) runs the layers
    under its ``int8_paths`` in int8 and the rest in fp32; so does a plain model given ``int8_paths``
    (the fp32 layers a candidate's QDQ model is made from); any other model is all fp32. Pruned
    layers are counted as the smaller layers they are, int8 layers as they deploy (an average pool
    + 1x1 conv folded into one strided conv, :func:`hwnas.dimensions.quantization.fold_pool_convs`).
    """
    from hwnas.dimensions.quantization import fold_pool_convs

    if getattr(model, "int8_paths", ()):
        model, int8_paths = model.model, model.int8_paths
    int8_paths = tuple(int8_paths)
    if int8_paths:
        model = fold_pool_convs(model, torch.zeros(1, *input_shape), int8_paths)
    totals: Dict[str, list] = {}

    def precision(name: str) -> str:
        return "int8" if any(name == p or name.startswith(p + ".") for p in int8_paths) else "fp32"

    def hook_for(name):
        def hook(module, inputs, output):
            if isinstance(module, nn.Conv2d):
                per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            else:
                per_output = module.in_features
            t = totals.setdefault(precision(name), [0.0, 0.0, 0.0])  # macs, weights, activations
            t[0] += output.numel() * per_output
            t[1] += sum(p.numel() for p in module.parameters(recurse=False))
            t[2] += inputs[0].numel() + output.numel()
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model.eval()(torch.zeros(batch_size, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return {p: Counts(*t) for p, t in totals.items()}


def mixed_energy_mJ(parts: Dict[str, Counts]) -> float:
    """Energy of a model whose layers run at several precisions (:func:`count_by_precision`)."""
    return sum(energy_mJ(c, p) for p, c in parts.items())


def estimate_model(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1, precision: str = "fp32",
                   latency_ms: float | None = None) -> dict:
    """``{"energy_mJ", "power_W" (when latency is given), "label": "estimated"}`` for a model.

    ``precision`` applies to a plain model; a quantized candidate counts its int8 layers as int8.
    """
    if getattr(model, "int8_paths", ()):
        e = mixed_energy_mJ(count_by_precision(model, input_shape, batch_size))
    else:
        e = energy_mJ(count_model(model, input_shape, batch_size), precision)
    out = {"energy_mJ": e, "label": ESTIMATED}
    if latency_ms:
        out["power_W"] = power_W(e, latency_ms)
    return out


class CandidateEnergy:
    """Estimated energy (mJ) of supernet candidates, compressed or not, from their own layers.

    Each genome of ``space`` (a joint space's, :class:`hwnas.dimensions.JointSpace`) is built
    as the layers that run (:func:`hwnas.supernets.structure`: extracted, pruned to its narrower
    layers; weights do not matter) and counted with its int8 units as int8 and the rest at
    ``precision``, one forward pass of ``batch_size`` images. What the profile's per-part table
    cannot know (it holds fp32 architectures) and what a device without a profile has; labelled
    ``estimated`` like every analytical figure. Counts are kept per candidate key.
    """

    label = ESTIMATED

    def __init__(self, supernet, space, input_shape: Sequence[int], batch_size: int = 1, precision: str = "fp32"):
        _check_precision(precision)
        self.supernet, self.space = supernet, space
        self.input_shape, self.batch_size, self.precision = tuple(input_shape), batch_size, precision
        self._cache: Dict[str, float] = {}

    def energy(self, genome) -> float:
        from hwnas.dimensions import compression_of, units_of
        from hwnas.supernets.base import structure

        key = self.space.key(genome)
        if key not in self._cache:
            config = self.space.decode(genome)
            paths = [p for d in compression_of(config) if hasattr(d, "int8_paths")
                     for p in d.int8_paths(d.own(config), units_of(self.supernet, config))]
            parts = count_by_precision(structure(self.supernet, config), self.input_shape, self.batch_size, paths)
            self._cache[key] = sum(energy_mJ(c, "int8" if p == "int8" else self.precision) for p, c in parts.items())
        return self._cache[key]

    def predict(self, genomes) -> np.ndarray:
        return np.array([self.energy(g) for g in np.atleast_2d(np.asarray(genomes, dtype=np.int64))], dtype=float)
