"""Load MobileNetV3 weights a user already has on disk into :class:`OFAMobileNetV3` (nothing is downloaded).

- :func:`load_ofa_mbv3`: once-for-all's published supernet (``ofa_mbv3_d234_e346_k357_w1.0``),
  tensor for tensor: every sub-network computes what OFA's computes.
- :func:`load_timm_mobilenetv3`: timm's ``mobilenetv3_large_100`` embedded in the largest
  sub-network (kernel 7, expand 6, depth 4 everywhere), which then computes exactly timm's
  function. Smaller kernels sit zero-padded in the 7x7 centre, the missing expanded
  channels are zero (BN scale and shift 0), and the block slots timm does not have are
  identities (zero projection, BN scale and shift 0, so the residual passes the input on).
  Smaller sub-networks crop these weights as usual; they are a starting point for
  fine-tuning, not trained sub-networks.

A file that does not match the layout raises :class:`HwnasError` with one line naming the
file and listing the missing and unexpected keys and the shape mismatches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Mapping, Tuple, Union

import torch
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn

from hwnas.errors import HwnasError

from .base import load_torch_file
from .elastic_mbv3 import OFAMobileNetV3

Source = Union[str, Path, Mapping[str, torch.Tensor]]
BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
OPTIONAL_SUFFIX = ".num_batches_tracked"  # files saved by older torch versions lack it; it changes nothing
SHOWN = 4  # keys listed per kind of mismatch before "... and N more"


# --- reading and checking ----------------------------------------------------------------
def read_state_dict(source: Source) -> Tuple[Dict[str, torch.Tensor], str]:
    """(state dict, name for messages) from a path to a torch file or a mapping.

    Accepts a bare state dict or one wrapped as ``{"state_dict": ...}`` (OFA's and timm's
    training checkpoints), with or without DataParallel's ``module.`` prefix.
    """
    if isinstance(source, Mapping):
        obj, name = source, "the given state dict"
    else:
        name = str(source)
        obj = load_torch_file(source, "weights file")
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise HwnasError(f"{name}: not a state dict (a mapping of parameter names to tensors)")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, name


def _listing(items: List[str]) -> str:
    more = f" ... and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def check_layout(state: Dict[str, torch.Tensor], expected: Dict[str, Tuple[int, ...]], name: str, layout: str,
                 spell: Callable[[str], str] = lambda key: key) -> Dict[str, torch.Tensor]:
    """``state`` re-keyed by ``spell`` (one spelling per key), or one error line listing what does not fit.

    ``expected`` maps the layout's keys (in the spelling messages show) to their shapes;
    ``spell`` maps any accepted spelling of a key to one form.
    """
    wanted = {spell(k): (k, tuple(shape)) for k, shape in expected.items()}
    found: Dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in state.items():
        canonical = spell(key)
        if canonical not in wanted or canonical in found:  # unknown, or a second spelling of one key
            unexpected.append(key)
        else:
            found[canonical] = tensor
    missing = [k for c, (k, _) in wanted.items() if c not in found and not k.endswith(OPTIONAL_SUFFIX)]
    wrong = [f"{k} {tuple(found[c].shape)} (expected {shape})" for c, (k, shape) in wanted.items()
             if c in found and tuple(found[c].shape) != shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing: {_listing(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {_listing(unexpected)}" if unexpected else "",
                 f"{len(wrong)} of the wrong shape: {_listing(wrong)}" if wrong else ""]
        raise HwnasError(f"{name}: not a {layout} state dict; " + "; ".join(p for p in parts if p))
    return found


def _num_classes(state: Dict[str, torch.Tensor], key: str, default: int = 1000) -> int:
    """Classes from the classifier's shape (fine-tuned files differ); a bad shape is reported by check_layout."""
    weight = state.get(key)
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else default


# --- once-for-all -----------------------------------------------------------------------
def _ofa_spelling(key: str) -> str:
    """One form for the spellings once-for-all's files use across versions.

    Older files name blocks ``.mobile_inverted_conv.`` (now ``.conv.``); the dynamic layers
    wrap their torch layer one level deeper (``.bn.bn.``, ``.conv.conv.weight``,
    ``.linear.linear.``) and files of static nets do not. OFA's own loader accepts all of these.
    """
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    return key.replace(".bn.bn.", ".bn.").replace(".conv.conv.weight", ".conv.weight") \
              .replace(".linear.linear.", ".linear.")


def ofa_key_map(net: OFAMobileNetV3) -> Dict[str, str]:
    """OFA state-dict key -> our state-dict key, in OFA's current spelling (``OFAMobileNetV3`` of once-for-all)."""
    pairs: Dict[str, str] = {}

    def layer(ofa: str, ours_conv: str, ours_bn: str, dynamic: bool) -> None:
        deep = ".conv" if dynamic else ""  # dynamic layers hold their nn.Conv2d / nn.BatchNorm2d as `.conv` / `.bn`
        pairs[f"{ofa}.conv{deep}.weight"] = f"{ours_conv}.weight"
        for field in BN_FIELDS:
            pairs[f"{ofa}.bn{'.bn' if dynamic else ''}.{field}"] = f"{ours_bn}.{field}"

    layer("first_conv", "stem.0.conv", "stem.0.bn", dynamic=False)
    layer("blocks.0.conv.depth_conv", "stem.1.conv_dw", "stem.1.bn1", dynamic=False)
    layer("blocks.0.conv.point_linear", "stem.1.conv_pw", "stem.1.bn2", dynamic=False)
    for slot, elastic in enumerate(net.blocks):
        ofa, ours = f"blocks.{slot + 1}.conv", f"blocks.{slot}.block"
        layer(f"{ofa}.inverted_bottleneck", f"{ours}.conv_pw", f"{ours}.bn1", dynamic=True)
        layer(f"{ofa}.depth_conv", f"{ours}.conv_dw", f"{ours}.bn2", dynamic=True)
        for name in elastic.kernel_transforms:
            pairs[f"{ofa}.depth_conv.conv.{name}_matrix"] = f"blocks.{slot}.kernel_transforms.{name}"
        if isinstance(elastic.block.se, SqueezeExcite):
            for theirs, mine in (("reduce", "conv_reduce"), ("expand", "conv_expand")):
                for field in ("weight", "bias"):
                    pairs[f"{ofa}.depth_conv.se.fc.{theirs}.{field}"] = f"{ours}.se.{mine}.{field}"
        layer(f"{ofa}.point_linear", f"{ours}.conv_pwl", f"{ours}.bn3", dynamic=True)
    layer("final_expand_layer", "head.conv", "head.bn", dynamic=False)
    pairs["feature_mix_layer.conv.weight"] = "classifier.0.weight"  # a 1x1 conv without bias or BN in OFA
    pairs["classifier.linear.weight"] = "classifier.3.weight"
    pairs["classifier.linear.bias"] = "classifier.3.bias"
    return pairs


def load_ofa_mbv3(source: Source) -> OFAMobileNetV3:
    """Once-for-all's ``ofa_mbv3_d234_e346_k357_w1.0`` weights (a file path or a state dict) as our supernet."""
    state, name = read_state_dict(source)
    num_classes = _num_classes({_ofa_spelling(k): v for k, v in state.items()}, "classifier.linear.weight")
    net = OFAMobileNetV3(num_classes=num_classes)
    ours = net.state_dict()
    key_map = ofa_key_map(net)
    # OFA's feature mix is a 1x1 conv: its weight has two trailing unit dimensions our linear layer lacks.
    expected = {k: tuple(ours[v].shape) + ((1, 1) if k.startswith("feature_mix_layer.") else ())
                for k, v in key_map.items()}
    found = check_layout(state, expected, name, "once-for-all ofa_mbv3_d234_e346_k357_w1.0", _ofa_spelling)
    for ofa_key, our_key in key_map.items():
        tensor = found.get(_ofa_spelling(ofa_key))
        if tensor is not None:
            ours[our_key] = tensor.reshape(ours[our_key].shape).to(ours[our_key].dtype)
    ours["classifier.0.bias"] = torch.zeros_like(ours["classifier.0.bias"])  # OFA's feature mix has no bias
    net.load_state_dict(ours)
    net.meta = {"imported_from": name, "layout": "ofa_mbv3"}
    return net.eval()


# --- timm -----------------------------------------------------------------------------------
@torch.no_grad()
def _blank(net: nn.Module) -> None:
    """Every weight 0 and BN statistics neutral (mean 0, var 1), kernel transforms identity.

    What the embedded weights do not fill then contributes nothing: a zero channel stays zero
    through BN (scale and shift 0), ReLU/hard-swish and the projection.
    """
    for name, tensor in net.state_dict().items():
        if "kernel_transforms." in name:
            tensor.copy_(torch.eye(tensor.shape[0]))
        elif name.endswith("running_var"):
            tensor.fill_(1.0)
        else:
            tensor.zero_()


@torch.no_grad()
def _embed(big: nn.Module, small: nn.Module) -> None:
    """Copy ``small``'s tensors into the leading slice of ``big``'s (depthwise kernels into the spatial centre)."""
    target = big.state_dict()
    for name, tensor in small.state_dict().items():
        if name.endswith(OPTIONAL_SUFFIX):
            continue
        dest = target[name]
        index = [slice(0, n) for n in tensor.shape]
        if name == "conv_dw.weight":
            for axis in (2, 3):
                start = (dest.shape[axis] - tensor.shape[axis]) // 2
                index[axis] = slice(start, start + tensor.shape[axis])
        dest[tuple(index)] = tensor


def load_timm_mobilenetv3(source: Source) -> OFAMobileNetV3:
    """timm ``mobilenetv3_large_100`` weights (a file path or a state dict) as the largest sub-network."""
    import timm

    state, name = read_state_dict(source)
    reference = timm.create_model("mobilenetv3_large_100", pretrained=False,
                                  num_classes=_num_classes(state, "classifier.weight"))
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    found = check_layout(state, expected, name, "timm mobilenetv3_large_100")
    reference.load_state_dict(found, strict=False)  # all but optional num_batches_tracked are there
    net = OFAMobileNetV3(num_classes=reference.num_classes)
    stages = reference.blocks
    if len(stages) != net.num_stages + 2 or any(len(s) > net.max_depth for s in stages[1:-1]):
        raise HwnasError(f"timm's mobilenetv3_large_100 has changed shape; {name} cannot be embedded")
    _blank(net)
    with torch.no_grad():
        net.stem[0].conv.weight.copy_(reference.conv_stem.weight)
        _embed(net.stem[0].bn, reference.bn1)
        net.stem[1].load_state_dict(stages[0][0].state_dict())
        for i, stage in enumerate(stages[1:-1]):
            for j, block in enumerate(stage):
                _embed(net.blocks[i * net.max_depth + j].block, block)
        head = stages[-1][0]  # timm's last stage is the 1x1 conv to 960 channels: our head
        net.head.conv.weight.copy_(head.conv.weight)
        _embed(net.head.bn, head.bn1)
        net.classifier[0].weight.copy_(reference.conv_head.weight.flatten(1))
        net.classifier[0].bias.copy_(reference.conv_head.bias)
        net.classifier[3].load_state_dict(reference.classifier.state_dict())
    net.meta = {"imported_from": name, "layout": "timm_mobilenetv3_large_100"}
    return net.eval()


LAYOUTS: Dict[str, Callable[[Source], OFAMobileNetV3]] = {
    "ofa_mbv3": load_ofa_mbv3,
    "timm_mobilenetv3_large_100": load_timm_mobilenetv3,
}


def load_layout(source: Source, layout: str) -> OFAMobileNetV3:
    if layout not in LAYOUTS:
        raise HwnasError(f"unknown weight layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    return LAYOUTS[layout](source)
