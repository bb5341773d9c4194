"""Once-for-all style elastic MobileNetV3 supernet built from timm's layers.

Every block slot holds one timm ``InvertedResidual`` at its largest size (kernel 7,
expand 6). A sub-network uses, per block, the first ``make_divisible(in * e)``
expanded channels, the centre ``k x k`` crop of the depthwise kernel (passed through
OFA's small kernel-transformation matrices, 7->5->3), the first ``d[i]`` blocks of
stage ``i``, and the input resized to ``r x r``. :meth:`ElasticMobileNetV3.extract`
builds the same sub-network from plain timm blocks of exactly those sizes with
copied weights.

Configs are flat dicts ``{"ks0".., "e0".., "d0".., "r"}``; :func:`arch_key` writes them
in OFA's ``ks=...;e=...;d=...;r=...`` form (the form of ``hwnas-bench/ofa.csv.gz``).
"""

from __future__ import annotations

import copy
import re
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct, create_act_layer, make_divisible
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual, SqueezeExcite
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space import Choice, SearchSpace

from .base import Config, Supernet

# MobileNetV3's squeeze-excite: ReLU inside, hard-sigmoid gate, channels rounded to 8.
SE_LAYER = partial(SqueezeExcite, rd_round_fn=make_divisible, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU)


def resize_input(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Elastic resolution: bilinearly resize the batch to ``resolution x resolution``."""
    if x.shape[-2:] == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _sliced_batchnorm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Run (timm's BatchNormAct2d) ``bn`` on the first ``x.shape[1]`` channels of its parameters."""
    c = x.shape[1]
    momentum = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    x = F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                     bn.training or not bn.track_running_stats, momentum, bn.eps)
    return bn.act(bn.drop(x)) if hasattr(bn, "act") else x


def _prefix(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The leading ``shape`` slice of ``t`` (how every elastic width is cut)."""
    return t[tuple(slice(0, n) for n in shape)]


class ElasticInvertedResidual(nn.Module):
    """One block slot: elastic depthwise kernel and expand ratio over a max-size timm block."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, kernel_sizes: Sequence[int],
                 expand_ratios: Sequence[int], act_layer: str, use_se: bool, kernel_transform: bool):
        super().__init__()
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.block_kwargs = dict(stride=stride, act_layer=act_layer, se_layer=SE_LAYER if use_se else None)
        self.block = InvertedResidual(in_chs, out_chs, dw_kernel_size=self.kernel_sizes[-1],
                                      exp_ratio=max(expand_ratios), **self.block_kwargs)
        # OFA's kernel transform: each smaller kernel is a learned linear map of the
        # centre of the next larger one (identity at start), shared across channels.
        self.kernel_transforms = nn.ParameterDict()
        if kernel_transform:
            for big, small in zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1]):
                self.kernel_transforms[f"{big}to{small}"] = nn.Parameter(torch.eye(small * small))

    def mid_channels(self, expand: int) -> int:
        return make_divisible(self.in_chs * expand)  # the same rounding timm's block applies

    def depthwise_weight(self, kernel: int, mid: int) -> torch.Tensor:
        """The ``mid x 1 x kernel x kernel`` depthwise weight of the sub-block."""
        w = self.block.conv_dw.weight[:mid]
        big = self.kernel_sizes[-1]
        for small in reversed(self.kernel_sizes[:-1]):
            if small < kernel:
                break
            start = (big - small) // 2
            w = w[:, :, start:start + small, start:start + small]
            matrix = self.kernel_transforms.get(f"{big}to{small}")
            if matrix is not None:
                w = F.linear(w.reshape(mid, small * small), matrix).reshape(mid, 1, small, small)
            big = small
        return w

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        blk, mid = self.block, self.mid_channels(expand)
        shortcut = x
        x = _sliced_batchnorm(blk.bn1, F.conv2d(x, blk.conv_pw.weight[:mid]))
        x = F.conv2d(x, self.depthwise_weight(kernel, mid), stride=self.stride, padding=kernel // 2, groups=mid)
        x = _sliced_batchnorm(blk.bn2, x)
        if isinstance(blk.se, SqueezeExcite):
            se, rd = blk.se, make_divisible(mid * 0.25)
            s = F.conv2d(x.mean((2, 3), keepdim=True), se.conv_reduce.weight[:rd, :mid], se.conv_reduce.bias[:rd])
            s = F.conv2d(se.act1(s), se.conv_expand.weight[:mid, :rd], se.conv_expand.bias[:mid])
            x = x * se.gate(s)
        x = blk.bn3(F.conv2d(x, blk.conv_pwl.weight[:, :mid]))
        return x + shortcut if blk.has_skip else x

    @torch.no_grad()
    def extract(self, kernel: int, expand: int) -> InvertedResidual:
        sub = InvertedResidual(self.in_chs, self.out_chs, dw_kernel_size=kernel, exp_ratio=expand, **self.block_kwargs)
        full = self.block.state_dict()
        state = {name: _prefix(full[name], t.shape).clone() for name, t in sub.state_dict().items()}
        state["conv_dw.weight"] = self.depthwise_weight(kernel, self.mid_channels(expand)).clone()
        sub.load_state_dict(state)
        return sub.eval()


class MobileNetV3Subnet(nn.Module):
    """A standalone sub-network: resize to ``input_resolution``, stem, blocks, head, classifier."""

    def __init__(self, input_resolution: int, stem: nn.Module, blocks: List[nn.Module], head: nn.Module,
                 classifier: nn.Module):
        super().__init__()
        self.input_resolution = input_resolution
        self.stem, self.blocks, self.head, self.classifier = stem, nn.Sequential(*blocks), head, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(resize_input(x, self.input_resolution)))
        return self.classifier(self.head(x).mean((2, 3)))


class ElasticMobileNetV3(Supernet):
    """Elastic resolution, per-stage depth, per-block kernel and expand ratio.

    The defaults are the shipped 28x28 grayscale default (``checkpoints/default_mbv3.pt``);
    larger data wants ``stem_stride=1`` and wider/more stages.

    ``stage_widths``/``stage_strides``/``stage_se`` describe the stages (the first block
    of a stage changes width and stride; the others are residual). Block slot ``b`` is
    block ``b % max_depth`` of stage ``b // max_depth``.

    Three options give the full MobileNetV3 shape of once-for-all and timm (see
    :class:`OFAMobileNetV3`): ``first_block`` puts MobileNetV3's fixed first block (3x3
    depthwise-separable, ``stem_width`` -> ``stem_width``, identity skip, the first stage's
    activation) into ``stem``; ``stage_acts`` sets each stage's activation (default
    ``act_layer`` everywhere); ``mix_width`` adds the post-pooling feature-mix layer (a
    biased linear map and ``act_layer``) in front of the classifier. The defaults leave
    them out, so older checkpoints keep their state-dict keys.
    """

    registry_name = "elastic_mbv3"
    elastic_patterns = {"resolution": r"r", "kernel": r"ks\d+", "depth": r"d\d+", "expand": r"e\d+"}

    def __init__(self, num_classes: int = 10, in_chans: int = 1, stem_width: int = 16, stem_stride: int = 2,
                 stage_widths: Sequence[int] = (16, 24, 32), stage_strides: Sequence[int] = (2, 1, 1),
                 stage_se: Sequence[bool] = (False, True, True), min_depth: int = 2, max_depth: int = 4,
                 kernel_sizes: Sequence[int] = (3, 5, 7), expand_ratios: Sequence[int] = (3, 4, 6),
                 resolutions: Sequence[int] = (16, 20, 24, 28), head_width: int = 128, act_layer: str = "hard_swish",
                 kernel_transform: bool = True, dropout: float = 0.1, first_block: bool = False,
                 stage_acts: Optional[Sequence[str]] = None, mix_width: Optional[int] = None):
        stage_widths, stage_strides, stage_se = tuple(stage_widths), tuple(stage_strides), tuple(stage_se)
        if not len(stage_widths) == len(stage_strides) == len(stage_se):
            raise HwnasError("stage_widths, stage_strides and stage_se must have one entry per stage")
        stage_acts = tuple(stage_acts) if stage_acts is not None else None
        if stage_acts is not None and len(stage_acts) != len(stage_widths):
            raise HwnasError(f"stage_acts needs one activation per stage ({len(stage_widths)}), got {list(stage_acts)}")
        if not 1 <= min_depth <= max_depth:
            raise HwnasError(f"need 1 <= min_depth <= max_depth, got {min_depth}, {max_depth}")
        if any(k % 2 == 0 for k in kernel_sizes):
            raise HwnasError(f"kernel sizes must be odd, got {list(kernel_sizes)}")
        super().__init__(num_classes=num_classes, in_chans=in_chans, stem_width=stem_width, stem_stride=stem_stride,
                         stage_widths=stage_widths, stage_strides=stage_strides, stage_se=stage_se,
                         min_depth=min_depth, max_depth=max_depth, kernel_sizes=tuple(sorted(kernel_sizes)),
                         expand_ratios=tuple(sorted(expand_ratios)), resolutions=tuple(sorted(resolutions)),
                         head_width=head_width, act_layer=act_layer, kernel_transform=kernel_transform,
                         dropout=dropout, **self._options(first_block, stage_acts, mix_width))
        kw = self.init_kwargs
        self.num_stages, self.max_depth = len(stage_widths), max_depth
        acts = stage_acts or (act_layer,) * len(stage_widths)
        self.stem = ConvNormAct(in_chans, stem_width, 3, stride=stem_stride, act_layer=act_layer)
        if first_block:  # inside the stem: code that times or copies `stem` as one part stays right
            self.stem = nn.Sequential(self.stem, DepthwiseSeparableConv(stem_width, stem_width, 3, act_layer=acts[0]))
        self.blocks = nn.ModuleList()
        in_chs = stem_width
        for width, stride, se, act in zip(stage_widths, stage_strides, stage_se, acts):
            for j in range(max_depth):
                self.blocks.append(ElasticInvertedResidual(
                    in_chs, width, stride if j == 0 else 1, kw["kernel_sizes"], kw["expand_ratios"],
                    act, se, kernel_transform))
                in_chs = width
        self.head = ConvNormAct(in_chs, head_width, 1, act_layer=act_layer)
        if mix_width:  # MobileNetV3's feature mix after pooling (a 1x1 conv on a 1x1 map is a linear map)
            self.classifier = nn.Sequential(nn.Linear(head_width, mix_width), create_act_layer(act_layer),
                                            nn.Dropout(dropout), nn.Linear(mix_width, num_classes))
        else:
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_width, num_classes))
        n_blocks = len(self.blocks)
        self._space = SearchSpace(
            [Choice(f"ks{b}", kw["kernel_sizes"]) for b in range(n_blocks)]
            + [Choice(f"e{b}", kw["expand_ratios"]) for b in range(n_blocks)]
            + [Choice(f"d{i}", tuple(range(min_depth, max_depth + 1))) for i in range(self.num_stages)]
            + [Choice("r", kw["resolutions"])],
            name=self.registry_name,
        )
        self.active = self.largest_config()

    @staticmethod
    def _options(first_block: bool, stage_acts, mix_width) -> Dict:
        """The MobileNetV3 options in use: recorded only when set, so the kwargs of earlier nets
        (in checkpoints and device lookup tables) stay as they were."""
        return {k: v for k, v in (("first_block", first_block), ("stage_acts", stage_acts),
                                  ("mix_width", mix_width)) if v}

    def active_blocks(self, config: Config) -> List[Tuple[int, int, int]]:
        """(slot, kernel, expand) of the blocks ``config`` runs, in order."""
        return [(b, config[f"ks{b}"], config[f"e{b}"])
                for i in range(self.num_stages)
                for b in range(i * self.max_depth, i * self.max_depth + config[f"d{i}"])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(resize_input(x, self.active["r"]))
        for b, kernel, expand in self.active_blocks(self.active):
            x = self.blocks[b](x, kernel, expand)
        return self.classifier(self.head(x).mean((2, 3)))

    def describe(self, config: Config) -> str:
        return arch_key(config)

    def compression_unit_names(self) -> List[str]:
        """Every unit a compression dimension may act on (its variables: ``quant.block5``, ...)."""
        return ["stem"] + [f"block{b}" for b in range(len(self.blocks))] + ["head"]

    def compression_units(self, config: Config):
        """The units of ``config``'s extracted sub-network (:class:`hwnas.dimensions.Unit`)."""
        from hwnas.dimensions import Unit

        blocks = [Unit(f"block{b}", b // self.max_depth, (f"blocks.{i}",))
                  for i, (b, _, _) in enumerate(self.active_blocks(config))]
        return [Unit("stem", None, ("stem",))] + blocks + [Unit("head", None, ("head", "classifier"))]

    def extract(self, config: Config) -> MobileNetV3Subnet:
        config = self.check_config(config)
        blocks = [self.blocks[b].extract(kernel, expand) for b, kernel, expand in self.active_blocks(config)]
        sub = MobileNetV3Subnet(config["r"], copy.deepcopy(self.stem), blocks, copy.deepcopy(self.head),
                                copy.deepcopy(self.classifier))
        return sub.eval()


OFA_MBV3_W1 = dict(
    num_classes=1000, in_chans=3, stem_width=16, stem_stride=2, stage_widths=(24, 40, 80, 112, 160),
    stage_strides=(2, 2, 2, 1, 2), stage_se=(False, True, False, True, True), min_depth=2, max_depth=4,
    kernel_sizes=(3, 5, 7), expand_ratios=(3, 4, 6), resolutions=tuple(range(128, 225, 4)), head_width=960,
    act_layer="hard_swish", kernel_transform=True, dropout=0.1, first_block=True,
    stage_acts=("relu", "relu", "hard_swish", "hard_swish", "hard_swish"), mix_width=1280)


class OFAMobileNetV3(ElasticMobileNetV3):
    """Once-for-all's MobileNetV3 (``ofa_mbv3_d234_e346_k357_w1.0``): ImageNet shape, OFA's resolutions.

    Its largest sub-network has the layout of timm's ``mobilenetv3_large_100`` with every
    block at kernel 7, expand 6 and depth 4 (see :mod:`hwnas.supernets.loaders`). Any
    constructor argument can be overridden (e.g. ``resolutions``, ``num_classes``).
    """

    registry_name = "ofa_mbv3_w1"

    def __init__(self, **overrides):
        options = {**OFA_MBV3_W1, **overrides}
        super().__init__(**options)
        # Recorded even when switched off: a checkpoint rebuilds through this class, whose defaults have them on.
        acts = options["stage_acts"]
        self.init_kwargs.update(first_block=options["first_block"], mix_width=options["mix_width"],
                                stage_acts=None if acts is None else tuple(acts))


# --- OFA arch_key <-> config ------------------------------------------------------------
_ARCH_KEY = re.compile(r"ks=(\d+);e=(\d+);d=(\d+);r=(\d+)")


def arch_key(config: Config) -> str:
    """``ks=<kernel per slot>;e=<expand per slot>;d=<depth per stage>;r=<resolution>`` (OFA's form)."""
    def digits(prefix: str) -> str:
        values = [config[k] for k in sorted((k for k in config if re.fullmatch(prefix + r"\d+", k)),
                                            key=lambda k: int(k[len(prefix):]))]
        if not values or any(not isinstance(v, int) or not 0 <= v <= 9 for v in values):
            raise HwnasError(f"arch_key needs single-digit integer '{prefix}<i>' values, got {values}")
        return "".join(str(v) for v in values)

    if "r" not in config:
        raise HwnasError("arch_key needs the resolution 'r' in the config")
    return f"ks={digits('ks')};e={digits('e')};d={digits('d')};r={int(config['r'])}"


def config_from_arch_key(key: str) -> Config:
    """Inverse of :func:`arch_key`."""
    match = _ARCH_KEY.fullmatch(key.strip())
    if not match:
        raise HwnasError(f"bad arch_key {key!r}; expected 'ks=<digits>;e=<digits>;d=<digits>;r=<int>'")
    ks, es, ds, r = match.groups()
    if len(ks) != len(es) or len(ks) % len(ds):
        raise HwnasError(f"bad arch_key {key!r}: {len(ks)} kernels, {len(es)} expands, {len(ds)} stages do not fit")
    config: Config = {f"ks{b}": int(k) for b, k in enumerate(ks)}
    config.update({f"e{b}": int(e) for b, e in enumerate(es)})
    config.update({f"d{i}": int(d) for i, d in enumerate(ds)})
    config["r"] = int(r)
    return config
