"""Once-for-all style elastic ResNet supernet (bottleneck blocks) built from timm's layers.

Every block slot holds one :class:`Bottleneck` at its largest size. A sub-network uses
the first ``d[i]`` blocks of stage ``i``, the first ``width(i, w[i])`` output channels of
every block in stage ``i`` (``w`` is a width multiplier of the stage's largest width),
the first ``make_divisible(out * e[b])`` bottleneck channels of block ``b`` and,
optionally, the input resized to ``r x r``. :meth:`ElasticResNet.extract` builds the same
sub-network from :class:`Bottleneck` blocks of exactly those sizes with copied weights.

Configs are flat dicts ``{"e0".., "d0".., "w0".., "r"}`` (``r`` only when the resolution
is elastic).
"""

from __future__ import annotations

import copy
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct, create_act_layer, create_conv2d, make_divisible
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space import Choice, SearchSpace

from .base import Config, Supernet
from .elastic_mbv3 import _prefix, _sliced_batchnorm, resize_input


@torch.no_grad()
def copy_prefix_weights(sub: nn.Module, full: nn.Module,
                        overrides: Optional[Dict[str, torch.Tensor]] = None) -> nn.Module:
    """Load into ``sub`` copies of the leading slices of ``full``'s same-named tensors.

    Every elastic width here is a prefix of the largest, so a smaller module of the same
    structure takes ``full[name][:n0, :n1, ...]``; ``overrides`` supplies the tensors that
    are not plain prefixes. Returns ``sub`` in eval mode, sharing no storage with ``full``.
    """
    big, overrides = full.state_dict(), overrides or {}
    sub.load_state_dict({name: overrides.get(name, _prefix(big[name], t.shape)).clone()
                         for name, t in sub.state_dict().items()})
    return sub.eval()


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 -> 3x3 (stride) -> 1x1, BN after each, activation after the sum.

    With ``projection`` the shortcut is OFA's "avgpool_conv" downsample (average pool by
    the stride, then 1x1 conv + BN); otherwise it is the identity.
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, stride: int, act_layer: str, projection: bool):
        super().__init__()
        self.conv1, self.bn1 = create_conv2d(in_chs, mid_chs, 1, bias=False), nn.BatchNorm2d(mid_chs)
        self.conv2 = create_conv2d(mid_chs, mid_chs, 3, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.conv3, self.bn3 = create_conv2d(mid_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs)
        self.act = create_act_layer(act_layer)
        self.downsample: Optional[nn.Sequential] = None
        if projection:
            pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                    else nn.Identity())
            self.downsample = nn.Sequential(pool, create_conv2d(in_chs, out_chs, 1, bias=False),
                                            nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.act(self.bn2(self.conv2(x)))
        return self.act(self.bn3(self.conv3(x)) + shortcut)


def _sliced_conv(conv: nn.Conv2d, x: torch.Tensor, out_chs: int) -> torch.Tensor:
    """``conv`` restricted to its first ``out_chs`` filters over the first ``x.shape[1]`` inputs."""
    return F.conv2d(x, conv.weight[:out_chs, :x.shape[1]], None, conv.stride, conv.padding, conv.dilation)


class ElasticBottleneck(nn.Module):
    """One block slot: a max-size :class:`Bottleneck` run with sliced channels."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, stride: int, act_layer: str, projection: bool):
        super().__init__()
        self.stride, self.act_layer, self.projection = stride, act_layer, projection
        self.block = Bottleneck(in_chs, mid_chs, out_chs, stride, act_layer, projection)

    def forward(self, x: torch.Tensor, mid_chs: int, out_chs: int) -> torch.Tensor:
        blk = self.block
        if blk.downsample is None:
            shortcut = x
        else:
            pool, conv, bn = blk.downsample
            shortcut = _sliced_batchnorm(bn, _sliced_conv(conv, pool(x), out_chs))
        x = blk.act(_sliced_batchnorm(blk.bn1, _sliced_conv(blk.conv1, x, mid_chs)))
        x = blk.act(_sliced_batchnorm(blk.bn2, _sliced_conv(blk.conv2, x, mid_chs)))
        return blk.act(_sliced_batchnorm(blk.bn3, _sliced_conv(blk.conv3, x, out_chs)) + shortcut)

    @torch.no_grad()
    def extract(self, in_chs: int, mid_chs: int, out_chs: int) -> Bottleneck:
        sub = Bottleneck(in_chs, mid_chs, out_chs, self.stride, self.act_layer, self.projection)
        return copy_prefix_weights(sub, self.block)


class ResNetSubnet(nn.Module):
    """A standalone sub-network: (resize), stem, bottleneck blocks, global average pool, classifier."""

    def __init__(self, input_resolution: Optional[int], stem: nn.Module, blocks: List[nn.Module],
                 classifier: nn.Linear):
        super().__init__()
        self.input_resolution = input_resolution
        self.stem, self.blocks, self.classifier = stem, nn.Sequential(*blocks), classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_resolution is not None:
            x = resize_input(x, self.input_resolution)
        return self.classifier(self.blocks(self.stem(x)).mean((2, 3)))


class ElasticResNet(Supernet):
    """Elastic per-stage depth and width multiplier, per-block expand ratio, optional resolution.

    Stage ``i`` has ``stage_widths[i]`` output channels at width multiplier 1, its first
    block has stride ``stage_strides[i]`` and a projection shortcut, and it runs
    ``base_depths[i] + x`` blocks for ``x`` in ``extra_depths``. Block slot ``b`` is block
    ``b % max_depth`` of stage ``b // max_depth``, where ``max_depth`` is the deepest
    stage's largest depth (unused slots of shallower stages are simply absent). Channel
    counts are rounded with timm's ``make_divisible(v, channel_divisor)`` and never
    exceed the largest. ``resolutions=()`` makes the input resolution fixed.
    """

    registry_name = "elastic_resnet"
    elastic_patterns = {"resolution": r"r", "depth": r"d\d+", "expand": r"e\d+", "width": r"w\d+"}  # OFA's ResNet order

    def __init__(self, num_classes: int = 10, in_chans: int = 1, stem_width: int = 16, stem_stride: int = 1,
                 stem_pool: bool = False, stage_widths: Sequence[int] = (32, 64, 128),
                 stage_strides: Sequence[int] = (1, 2, 2), base_depths: Sequence[int] = (1, 1, 1),
                 extra_depths: Sequence[int] = (0, 1, 2), expand_ratios: Sequence[float] = (0.2, 0.25, 0.35),
                 width_mults: Sequence[float] = (0.65, 0.8, 1.0), resolutions: Sequence[int] = (20, 24, 28),
                 channel_divisor: int = 8, act_layer: str = "relu"):
        stage_widths, stage_strides, base_depths = tuple(stage_widths), tuple(stage_strides), tuple(base_depths)
        if not len(stage_widths) == len(stage_strides) == len(base_depths) >= 1:
            raise HwnasError("stage_widths, stage_strides and base_depths must have one entry per stage")
        if min(base_depths) + min(extra_depths) < 1 or min(extra_depths) < 0:
            raise HwnasError(f"every stage needs >= 1 block: base_depths {list(base_depths)}, "
                             f"extra_depths {list(extra_depths)}")
        if any(not 0 < v <= 1 for v in width_mults) or any(v <= 0 for v in expand_ratios):
            raise HwnasError("width_mults must lie in (0, 1] and expand_ratios must be > 0")
        super().__init__(num_classes=num_classes, in_chans=in_chans, stem_width=stem_width, stem_stride=stem_stride,
                         stem_pool=stem_pool, stage_widths=stage_widths, stage_strides=stage_strides,
                         base_depths=base_depths, extra_depths=tuple(sorted(set(extra_depths))),
                         expand_ratios=tuple(sorted(set(expand_ratios))), width_mults=tuple(sorted(set(width_mults))),
                         resolutions=tuple(sorted(set(resolutions))), channel_divisor=channel_divisor,
                         act_layer=act_layer)
        kw = self.init_kwargs
        self.num_stages = len(stage_widths)
        self.max_depth = max(base_depths) + max(kw["extra_depths"])
        self.elastic_resolution = bool(kw["resolutions"])
        stem = [ConvNormAct(in_chans, stem_width, 3, stride=stem_stride, act_layer=act_layer)]
        if stem_pool:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        self.blocks = nn.ModuleDict()  # keyed by slot number: shallow stages leave gaps
        in_chs = stem_width
        for i, (width, stride) in enumerate(zip(stage_widths, stage_strides)):
            mid = max(self.mid_channels(self.stage_width(i, w), e) for w in kw["width_mults"]
                      for e in kw["expand_ratios"])
            for j in range(base_depths[i] + max(kw["extra_depths"])):
                self.blocks[str(i * self.max_depth + j)] = ElasticBottleneck(
                    in_chs, mid, width, stride if j == 0 else 1, act_layer, projection=j == 0)
                in_chs = width
        self.classifier = nn.Linear(in_chs, num_classes)

        stage_slots = [[b for b in range(i * self.max_depth, (i + 1) * self.max_depth) if str(b) in self.blocks]
                       for i in range(self.num_stages)]
        self._space = SearchSpace(
            [Choice(f"e{b}", kw["expand_ratios"]) for slots in stage_slots for b in slots]
            + [Choice(f"d{i}", tuple(base_depths[i] + x for x in kw["extra_depths"])) for i in range(self.num_stages)]
            + [Choice(f"w{i}", kw["width_mults"]) for i in range(self.num_stages)]
            + ([Choice("r", kw["resolutions"])] if self.elastic_resolution else []),
            name=self.registry_name,
        )
        self.active = self.largest_config()

    def stage_width(self, stage: int, width_mult: float) -> int:
        full = self.init_kwargs["stage_widths"][stage]
        return min(full, make_divisible(full * width_mult, self.init_kwargs["channel_divisor"]))

    def mid_channels(self, out_chs: int, expand: float) -> int:
        # OFA: the bottleneck width follows the block's ACTIVE output width
        return make_divisible(out_chs * expand, self.init_kwargs["channel_divisor"])

    def active_blocks(self, config: Config) -> List[Tuple[int, int, int]]:
        """(slot, mid channels, out channels) of the blocks ``config`` runs, in order."""
        out = []
        for i in range(self.num_stages):
            width = self.stage_width(i, config[f"w{i}"])
            for b in range(i * self.max_depth, i * self.max_depth + config[f"d{i}"]):
                out.append((b, self.mid_channels(width, config[f"e{b}"]), width))
        return out

    def compression_unit_names(self) -> List[str]:
        """Every unit a compression dimension may act on (its variables: ``quant.block5``, ...)."""
        return ["stem"] + [f"block{b}" for b in self.blocks] + ["head"]

    def compression_units(self, config: Config):
        """The units of ``config``'s extracted sub-network (:class:`hwnas.dimensions.Unit`)."""
        from hwnas.dimensions import Unit

        blocks = [Unit(f"block{b}", b // self.max_depth, (f"blocks.{i}",))
                  for i, (b, _, _) in enumerate(self.active_blocks(config))]
        return [Unit("stem", None, ("stem",))] + blocks + [Unit("head", None, ("classifier",))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.elastic_resolution:
            x = resize_input(x, self.active["r"])
        x = self.stem(x)
        for b, mid, out in self.active_blocks(self.active):
            x = self.blocks[str(b)](x, mid, out)
        x = x.mean((2, 3))
        return F.linear(x, self.classifier.weight[:, :x.shape[1]], self.classifier.bias)

    @torch.no_grad()
    def extract(self, config: Config) -> ResNetSubnet:
        config = self.check_config(config)
        blocks, in_chs = [], self.init_kwargs["stem_width"]
        for b, mid, out in self.active_blocks(config):
            blocks.append(self.blocks[str(b)].extract(in_chs, mid, out))
            in_chs = out
        classifier = copy_prefix_weights(nn.Linear(in_chs, self.init_kwargs["num_classes"]), self.classifier)
        sub = ResNetSubnet(config["r"] if self.elastic_resolution else None, copy.deepcopy(self.stem), blocks,
                           classifier)
        return sub.eval()
