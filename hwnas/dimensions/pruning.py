"""Structured pruning: per stage, the fraction of each block's inner channels that is kept.

Variables ``prune.stage<i>`` (options ``space.pruning.keep``, default 0.5, 0.75, 1.0).
Applied to the extracted sub-network as truly smaller layers: in every block of stage
``i`` the inner channels (the expanded channels of an inverted residual; the two middle
widths of a ResNet bottleneck) are ranked by the L1 norm of the filters that produce them
and the top ``round(keep * n)`` (a multiple of 4, at least 4) are copied into new, narrower
convolutions and BatchNorms; the consumers lose the matching input channels. BatchNorm is
then recalibrated (:func:`hwnas.supernets.materialize`).

Slicing is hand-written because these blocks are known and small (one table entry per block
type below): torch-pruning's dependency graph would do the same on these shapes but is not a
dependency of the project.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space import Choice

from . import DIMENSIONS, Dimension, Options, Unit

CHANNEL_MULTIPLE = 4  # kept channel counts are multiples of this (vector kernels like them)


class PruningOptions(Options):
    keep: List[float] = Field(default=[0.5, 0.75, 1.0], min_length=1)

    @field_validator("keep")
    @classmethod
    def _ratios(cls, value):
        bad = [v for v in value if not 0 < v <= 1]
        if bad:
            raise ValueError(f"keep ratios must lie in (0, 1]; got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"a keep ratio is listed twice: {value}")
        return sorted(value)  # the first option is the smallest network (SearchSpace.smallest)


def kept_channels(n: int, keep: float) -> int:
    """How many of ``n`` channels a keep ratio leaves (multiple of CHANNEL_MULTIPLE, >= it, <= n)."""
    if keep >= 1:
        return n
    k = int(round(n * keep / CHANNEL_MULTIPLE)) * CHANNEL_MULTIPLE
    return min(n, max(CHANNEL_MULTIPLE, k))


def l1_ranked(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (in their original order) of the ``k`` output filters of ``weight`` with the largest L1 norm."""
    norms = weight.detach().abs().reshape(weight.shape[0], -1).sum(1)
    return torch.sort(torch.topk(norms, k, sorted=False).indices).values


@torch.no_grad()
def _conv(conv: nn.Conv2d, out_idx=None, in_idx=None) -> nn.Conv2d:
    """A copy of ``conv`` keeping output channels ``out_idx`` and input channels ``in_idx``.

    A depthwise conv (groups == in == out channels) keeps ``out_idx`` on both sides.
    """
    w = conv.weight
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None and not depthwise:
        w = w[:, in_idx]
    groups = len(out_idx) if depthwise else conv.groups
    new = nn.Conv2d(w.shape[1] * groups, w.shape[0], conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    groups, conv.bias is not None, conv.padding_mode)
    new.weight.copy_(w)
    if conv.bias is not None:
        new.bias.copy_(conv.bias if out_idx is None else conv.bias[out_idx])
    return new


@torch.no_grad()
def _bn(bn: nn.BatchNorm2d, idx) -> nn.BatchNorm2d:
    """``bn`` (timm's BatchNormAct2d too: it keeps its activation) narrowed to channels ``idx`` in place."""
    for name in ("weight", "bias"):
        setattr(bn, name, nn.Parameter(getattr(bn, name)[idx].clone()))
    bn.running_mean = bn.running_mean[idx].clone()
    bn.running_var = bn.running_var[idx].clone()
    bn.num_features = len(idx)
    return bn


def prune_inverted_residual(block, keep: float) -> None:
    """timm ``InvertedResidual``: the expanded channels (conv_pw out, depthwise, SE in/out, conv_pwl in)."""
    k = kept_channels(block.conv_pw.out_channels, keep)
    if k == block.conv_pw.out_channels:
        return
    idx = l1_ranked(block.conv_pw.weight, k)
    block.conv_pw = _conv(block.conv_pw, out_idx=idx)
    _bn(block.bn1, idx)
    block.conv_dw = _conv(block.conv_dw, out_idx=idx)
    _bn(block.bn2, idx)
    se = block.se
    if hasattr(se, "conv_reduce"):  # squeeze-excite keeps its reduced width, sees fewer channels
        se.conv_reduce = _conv(se.conv_reduce, in_idx=idx)
        se.conv_expand = _conv(se.conv_expand, out_idx=idx)
    block.conv_pwl = _conv(block.conv_pwl, in_idx=idx)


def prune_bottleneck(block, keep: float) -> None:
    """ResNet bottleneck: both middle widths (conv1 out / conv2 in, conv2 out / conv3 in)."""
    k1 = kept_channels(block.conv1.out_channels, keep)
    k2 = kept_channels(block.conv2.out_channels, keep)
    if k1 < block.conv1.out_channels:
        idx = l1_ranked(block.conv1.weight, k1)
        block.conv1, block.conv2 = _conv(block.conv1, out_idx=idx), _conv(block.conv2, in_idx=idx)
        _bn(block.bn1, idx)
    if k2 < block.conv2.out_channels:
        idx = l1_ranked(block.conv2.weight, k2)
        block.conv2, block.conv3 = _conv(block.conv2, out_idx=idx), _conv(block.conv3, in_idx=idx)
        _bn(block.bn2, idx)


def _pruners() -> Dict[type, Callable[[nn.Module, float], None]]:
    from timm.models._efficientnet_blocks import InvertedResidual

    from hwnas.supernets.elastic_resnet import Bottleneck

    return {InvertedResidual: prune_inverted_residual, Bottleneck: prune_bottleneck}


@DIMENSIONS.register("pruning")
class Pruning(Dimension):
    name = "pruning"
    prefix = "prune"
    Options = PruningOptions
    neutral = 1.0

    def unsupported(self, supernet):
        if not hasattr(supernet, "compression_units") or not hasattr(supernet, "num_stages"):
            return f"supernet {supernet.registry_name!r} has no prunable blocks (elastic_mbv3, ofa_mbv3_w1, " \
                   f"elastic_resnet have)"
        return None

    def variables(self, supernet) -> List[Choice]:
        return [Choice(self.key(f"stage{i}"), tuple(self.options.keep)) for i in range(supernet.num_stages)]

    def restructure(self, model: nn.Module, values: Dict[str, Any], units: Sequence[Unit]) -> nn.Module:
        pruners = _pruners()
        for unit in units:
            keep = values.get(self.key(f"stage{unit.stage}"), 1.0) if unit.is_block else 1.0
            if keep >= 1:
                continue
            for path in unit.paths:
                block = model.get_submodule(path)
                prune = pruners.get(type(block))
                if prune is None:
                    raise HwnasError(f"pruning: no pruner for a {type(block).__name__} block ({unit.name})")
                prune(block, float(keep))
        return model

    def features(self, space, genomes, units=(), active=None) -> np.ndarray:
        """Per stage: the keep ratio (scaled to [0, 1] over the options), and the share of the
        network's running blocks that lose channels times the share they lose (pruning a stage of
        two blocks costs less than one of four)."""
        plain = space.features(genomes)
        if active is None:
            return plain
        keep = np.asarray([v.options for v in space.variables], dtype=float)  # (stages, options)
        G = np.asarray(genomes)
        lost = 1 - keep[np.arange(len(space.variables)), G]  # (n, stages)
        stage = np.array([u.stage if u.is_block else -1 for u in units])
        runs = np.stack([active[:, stage == i].sum(1) for i in range(len(space.variables))], 1)
        share = runs / np.maximum(active[:, stage >= 0].sum(1, keepdims=True), 1)
        return np.hstack([plain, lost * share]).astype(np.float32)

    def cost_key(self, unit: Unit, values: Dict[str, Any]) -> str:
        keep = values.get(self.key(f"stage{unit.stage}"), 1.0) if unit.is_block else 1.0
        return "" if keep >= 1 else f"_p{keep:g}"

    def acts_on(self, unit: Unit):
        return self.key(f"stage{unit.stage}") if unit.is_block else None

    def describe(self, values: Dict[str, Any], units: Sequence[Unit]) -> str:
        ratios = [values[k] for k in sorted(values, key=lambda k: int(k.rsplit("stage", 1)[1]))]
        return "" if all(r >= 1 for r in ratios) else "keep=" + "/".join(f"{r:g}" for r in ratios)
