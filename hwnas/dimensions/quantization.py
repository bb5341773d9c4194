"""Mixed-precision quantization: per unit (stem, each block slot, head) fp32 or int8.

Variables ``quant.stem``, ``quant.block<slot>``, ``quant.head`` (options
``space.quantization.precisions``, default int8, fp32). A candidate with int8 units
deploys as onnxruntime's static QDQ model (:func:`hwnas.devices.onnx.quantize_int8`:
per-channel int8 weights, uint8 activations whose ranges are calibrated on the BatchNorm
calibration images) with only the int8 units' ONNX nodes quantized. :class:`QuantizedModel` is that
deployed form as a torch module: ``forward`` runs the int8 model in onnxruntime (so
accuracy is the real int8 model's, not a simulation), and :func:`hwnas.devices.onnx.to_onnx`
returns its QDQ bytes, so the onnxruntime backend times and ``hwnas export`` ships it. Before
quantizing, an int8 unit's average pool + 1x1 conv (the ResNet shortcut) becomes one strided
conv (:func:`fold_pool_convs`, exact): onnxruntime's int8 average pool is slow.

Only int8 is offered: onnxruntime's CPU provider has no int4 convolution kernel (its 4-bit
kernels are for MatMul weights), and fp16 runs no faster than fp32 on its CPU provider.
Whether int8 is faster for a block is measured, never assumed (it is slower around
hard-swish and squeeze-excite on MobileNetV3: the search keeps those blocks fp32).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from hwnas.space import Choice

from . import DIMENSIONS, Dimension, Options, Unit

PRECISIONS = ("int8", "fp32")  # fewest bits first: the first option is the smallest network
# Activation ranges are calibrated on at most this many of the calibration images: onnxruntime's
# calibration pass costs ~10 ms per image here, and min-max ranges settle within a few batches.
QUANT_CALIB_IMAGES = 128
WHY_NOT = {"int4": "onnxruntime's CPU provider has no int4 convolution kernel",
           "fp16": "onnxruntime's CPU provider runs fp16 convolutions no faster than fp32",
           "bf16": "onnxruntime's CPU provider has no bf16 convolution kernel"}


class QuantizationOptions(Options):
    precisions: List[str] = Field(default=list(PRECISIONS), min_length=1)

    @field_validator("precisions")
    @classmethod
    def _known(cls, value):
        for p in value:
            if p not in PRECISIONS:
                reason = f" ({WHY_NOT[p]})" if p in WHY_NOT else ""
                raise ValueError(f"precision {p!r} is not offered{reason}; allowed: {', '.join(PRECISIONS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"a precision is listed twice: {value}")
        return [p for p in PRECISIONS if p in value]


def onnx_scope(path: str) -> str:
    """The ONNX node-name prefix of a module path (torch's exporter names nodes by module scope).

    ``blocks.3`` -> ``/blocks/blocks.3/``: a numbered child of a container is ``<container>.<i>``.
    """
    parts: List[str] = []
    for p in path.split("."):
        parts.append(f"{parts[-1].split('/')[-1]}.{p}" if p.isdigit() and parts else p)
    return "/" + "/".join(parts) + "/"


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _foldable(pool: nn.Module, conv: nn.Module, size) -> bool:
    """An average pool (kernel = stride, no padding, tiling ``size`` exactly) then a plain 1x1 convolution."""
    if type(pool) is not nn.AvgPool2d or type(conv) is not nn.Conv2d:
        return False
    k, s = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
    return (k == s and _pair(pool.padding) == (0, 0) and pool.divisor_override is None
            and size is not None and size[0] % k[0] == 0 and size[1] % k[1] == 0
            and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1)


@torch.no_grad()
def fold_pool_convs(model: nn.Module, example: torch.Tensor, paths: Sequence[str]) -> nn.Module:
    """A copy of ``model`` whose average pool + 1x1 convolution pairs under ``paths`` are one conv.

    Pooling by ``s`` then a 1x1 conv ``W`` equals an ``s x s`` conv of stride ``s`` with weights
    ``W / s^2`` at every tap (exact where the pool tiles its input; ``example`` shows the sizes).
    In int8 it matters: onnxruntime fuses DQ -> AveragePool -> Q into QLinearAveragePool, which took
    ~2 ms of the elastic ResNet's 6.8 ms int8 forward here (the two shortcut pools), while the
    folded conv runs as QLinearConv: the int8 network went from 1.39x to 1.68x the fp32 one's speed
    (benchmarks/compression.py). In fp32 the pool is the faster form, so only int8 units are folded.
    """
    model = copy.deepcopy(model)
    sizes: Dict[nn.Module, Any] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: sizes.__setitem__(mod, tuple(args[0].shape[-2:])))
             for m in model.modules() if type(m) is nn.AvgPool2d]
    try:
        model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    prefixes = tuple(f"{p}." for p in paths)
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or not f"{name}.".startswith(prefixes):
            continue
        for i in range(len(seq) - 1):
            pool, conv = seq[i], seq[i + 1]
            if not _foldable(pool, conv, sizes.get(pool)):
                continue
            k = _pair(pool.kernel_size)
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, k, stride=k, bias=conv.bias is not None)
            folded.weight.copy_(conv.weight.expand(-1, -1, *k) / (k[0] * k[1]))
            if conv.bias is not None:
                folded.bias.copy_(conv.bias)
            seq[i], seq[i + 1] = nn.Identity(), folded  # same child indices: module paths stay
    return model.eval()


class QuantizedModel(nn.Module):
    """A candidate whose ``int8_paths`` modules run in int8 (onnxruntime QDQ); the rest fp32.

    ``model``: the fp32 torch module (pruned and BatchNorm-recalibrated) the QDQ model is made
    from; ``calibration``: the input batches that set the activation ranges. The ONNX bytes
    and the onnxruntime session are built on first use and kept.
    """

    def __init__(self, model: nn.Module, int8_paths: Sequence[str], calibration: Sequence[torch.Tensor]):
        super().__init__()
        self.model = model.eval()
        self.int8_paths = tuple(int8_paths)
        self.calibration = list(calibration)
        self._onnx: Optional[bytes] = None
        self._session = None

    def deployed_onnx(self, example: Optional[torch.Tensor] = None) -> bytes:
        """The QDQ ONNX model (dynamic batch; any batch size runs it)."""
        from hwnas.devices.onnx import quantize_int8, to_onnx

        if self._onnx is None:
            first = self.calibration[0][:1]
            fp32 = to_onnx(fold_pool_convs(self.model, first, self.int8_paths), first, dynamic_batch=True)
            self._onnx = quantize_int8(fp32, self.calibration, scopes=[onnx_scope(p) for p in self.int8_paths])
        return self._onnx

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from hwnas.devices.onnx import run, session

        if self._session is None:
            self._session = session(self.deployed_onnx(), threads=1)
        return torch.from_numpy(run(self._session, x))

    def __getstate__(self):  # sessions do not pickle; the bytes rebuild them
        state = self.__dict__.copy()
        state["_session"] = None
        return state


@DIMENSIONS.register("quantization")
class Quantization(Dimension):
    name = "quantization"
    prefix = "quant"
    Options = QuantizationOptions
    neutral = "fp32"

    def unsupported(self, supernet):
        if not hasattr(supernet, "compression_units"):
            return f"supernet {supernet.registry_name!r} names no quantization units (elastic_mbv3, " \
                   f"ofa_mbv3_w1, elastic_resnet do)"
        return None

    def unit_names(self, supernet) -> List[str]:
        return supernet.compression_unit_names()

    def variables(self, supernet) -> List[Choice]:
        return [Choice(self.key(u), tuple(self.options.precisions)) for u in self.unit_names(supernet)]

    def precision(self, unit: Unit, values: Dict[str, Any]) -> str:
        return values.get(self.key(unit.name), "fp32")

    def int8_paths(self, values: Dict[str, Any], units: Sequence[Unit]) -> List[str]:
        """The module paths (in the extracted model) that run in int8."""
        return [p for u in units if self.precision(u, values) == "int8" for p in u.paths]

    def deploy(self, model: nn.Module, values: Dict[str, Any], units: Sequence[Unit], calibration):
        paths = self.int8_paths(values, units)
        if not paths:
            return model
        images = torch.cat(list(calibration))[:QUANT_CALIB_IMAGES]
        return QuantizedModel(model, paths, list(images.split(32)))

    def features(self, space, genomes, units=(), active=None) -> np.ndarray:
        """Per unit: int8 and running (a switched-off block's precision changes nothing); the int8
        share of the running units; int8 stem, blocks and head each as a share of the running blocks."""
        int8 = np.asarray(genomes) == 0  # PRECISIONS order: int8 first
        if space.variables and space.variables[0].options[0] != "int8":
            int8 = np.zeros_like(int8)
        if active is not None:  # columns of ``active`` in this space's variable order
            where = {self.key(u.name): j for j, u in enumerate(units)}
            active = active[:, [where[v.name] for v in space.variables]]
            int8 = int8 & active
        runs = active.sum(1, keepdims=True) if active is not None else np.full((len(int8), 1), int8.shape[1])
        return np.hstack([int8, int8.sum(1, keepdims=True) / np.maximum(runs, 1)]).astype(np.float32)

    def cost_key(self, unit: Unit, values: Dict[str, Any]) -> str:
        return "_int8" if self.precision(unit, values) == "int8" else ""

    def acts_on(self, unit: Unit):
        return self.key(unit.name)

    def describe(self, values: Dict[str, Any], units: Sequence[Unit]) -> str:
        int8 = [u.name.replace("block", "b") for u in units if self.precision(u, values) == "int8"]
        return f"int8={','.join(int8)}" if int8 else ""
