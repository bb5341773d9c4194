"""Weight-sharing supernets: a registry, checkpoints, and the shipped default.

    from hwnas import supernets
    net = supernets.load_default()          # trained elastic MobileNetV3 on fmnist-mini
    config = net.sample(np.random.default_rng(0))
    model = net.extract(config)             # standalone nn.Module with copied weights
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from hwnas.errors import HwnasError
from hwnas.registry import Registry

from .base import (Supernet, calibration_batches, load_torch_file, materialize, measure_accuracy, recalibrate_bn,
                   subnet_accuracy)
from .datasets import DatasetSplits, load_dataset
from .elastic_mbv3 import OFA_MBV3_W1, ElasticMobileNetV3, OFAMobileNetV3, arch_key, config_from_arch_key
from .elastic_resnet import ElasticResNet
from .elastic_vit import ElasticViT
from .report import cpu_latency_ms, tradeoff_report
from .train import TrainResult, TrainSettings, train_supernet

SUPERNETS = Registry("supernet")
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "default_mbv3.pt"
DEFAULT_SUPERNET = "elastic_mbv3"  # what DEFAULT_CHECKPOINT holds
#: Checkpoints shipped in the package, by the name an experiment or a command may give instead of a path.
SHIPPED_CHECKPOINTS = {"default": DEFAULT_CHECKPOINT, "fmnist_mbv3": CHECKPOINT_DIR / "fmnist_mbv3.pt"}
CHECKPOINT_KEYS = ("name", "kwargs", "state_dict", "meta")


def checkpoint_path(checkpoint) -> Path:
    """The file of a shipped checkpoint's name (``default``, ``fmnist_mbv3``), else the path as given."""
    return SHIPPED_CHECKPOINTS.get(str(checkpoint), Path(checkpoint).expanduser())


@SUPERNETS.register("elastic_mbv3")
def elastic_mbv3(**kwargs) -> ElasticMobileNetV3:
    return ElasticMobileNetV3(**kwargs)


@SUPERNETS.register("ofa_mbv3_w1")
def ofa_mbv3_w1(**overrides) -> OFAMobileNetV3:
    """Once-for-all's MobileNetV3 w1.0 shape (load its weights with ``hwnas supernet import``)."""
    return OFAMobileNetV3(**overrides)


@SUPERNETS.register("elastic_resnet")
def elastic_resnet(**kwargs) -> ElasticResNet:
    return ElasticResNet(**kwargs)


@SUPERNETS.register("elastic_vit")
def elastic_vit(**kwargs) -> ElasticViT:
    return ElasticViT(**kwargs)


def create(name: str, **kwargs) -> Supernet:
    return SUPERNETS.create(name, **kwargs)


def names() -> List[str]:
    return SUPERNETS.names()


def checkpoint_dict(supernet: Supernet, meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What :func:`save_checkpoint` writes: enough to rebuild the supernet by name."""
    if supernet.registry_name not in SUPERNETS:
        raise HwnasError(f"{type(supernet).__name__} is not a registered supernet; known: {', '.join(names())}")
    meta = meta if meta is not None else supernet.meta
    try:  # plain JSON types only, so that weights_only loading accepts the file
        meta = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as err:
        raise HwnasError(f"checkpoint meta must be JSON-like (dicts, lists, str, numbers): {err}") from None
    return {"name": supernet.registry_name, "kwargs": dict(supernet.init_kwargs),
            "state_dict": supernet.state_dict(), "meta": meta}


def save_checkpoint(supernet: Supernet, path, meta: Optional[Dict[str, Any]] = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint_dict(supernet, meta), path)
    return path


def _check_checkpoint_dict(ckpt: Any, source: str) -> Dict[str, Any]:
    """The four keys, each of the right kind (a file from elsewhere may hold anything)."""
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        raise HwnasError(f"{source} is not a supernet checkpoint (needs keys {', '.join(CHECKPOINT_KEYS)})")
    if not isinstance(ckpt["name"], str) or ckpt["name"] not in SUPERNETS:
        raise HwnasError(f"{source}: name: {ckpt['name']!r} is not a registered supernet; allowed: {', '.join(names())}")
    for key in ("kwargs", "state_dict", "meta"):
        if not isinstance(ckpt[key], dict) or not all(isinstance(k, str) for k in ckpt[key]):
            raise HwnasError(f"{source}: {key}: must be a mapping with string keys, got {type(ckpt[key]).__name__}")
    return ckpt


def supernet_from_dict(ckpt: Any, source: str = "checkpoint") -> Supernet:
    ckpt = _check_checkpoint_dict(ckpt, source)
    try:  # the stored constructor arguments must fit the supernet's signature and values
        net = create(ckpt["name"], **ckpt["kwargs"])
    except (HwnasError, TypeError, ValueError, KeyError, IndexError, AssertionError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise HwnasError(f"{source}: kwargs: the stored constructor arguments do not fit supernet "
                         f"{ckpt['name']!r}: {first}") from None
    try:
        net.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0]
        raise HwnasError(f"{source}: weights do not fit supernet {ckpt['name']!r}: {first}") from None
    net.meta = dict(ckpt["meta"])
    return net.eval()


def _read_checkpoint(path) -> Dict[str, Any]:
    return _check_checkpoint_dict(load_torch_file(path, "supernet checkpoint"), str(path))


def load_checkpoint(path) -> Supernet:
    """Rebuild a supernet saved by :func:`save_checkpoint` (safe ``weights_only`` loading)."""
    return supernet_from_dict(_read_checkpoint(path), source=str(path))


def load_checkpoint_header(path) -> tuple:
    """``(registered name, constructor kwargs)`` of a checkpoint, without building the supernet."""
    ckpt = _read_checkpoint(path)
    return ckpt["name"], dict(ckpt["kwargs"])


def load_default() -> Supernet:
    """The shipped elastic MobileNetV3 trained on the embedded ``fmnist-mini`` data."""
    return load_checkpoint(DEFAULT_CHECKPOINT)


__all__ = [
    "ElasticResNet",
    "ElasticViT",
    "SUPERNETS", "DEFAULT_CHECKPOINT", "DEFAULT_SUPERNET", "SHIPPED_CHECKPOINTS", "checkpoint_path", "Supernet", "ElasticMobileNetV3", "OFAMobileNetV3",
    "OFA_MBV3_W1", "DatasetSplits", "create", "names",
    "save_checkpoint", "load_checkpoint", "load_checkpoint_header", "load_default", "checkpoint_dict",
    "supernet_from_dict", "load_dataset",
    "arch_key", "config_from_arch_key", "recalibrate_bn", "measure_accuracy", "subnet_accuracy", "materialize",
    "calibration_batches", "TrainSettings", "TrainResult", "train_supernet", "tradeoff_report", "cpu_latency_ms",
]
