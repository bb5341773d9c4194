"""The contract every weight-sharing supernet honours, and sub-network evaluation helpers.

A search decodes a genome into a flat config dict (``space.decode``) and hands it to
:meth:`Supernet.set_active` / :meth:`Supernet.extract`. Extracted sub-networks are
standalone modules with copied weights; their BatchNorm statistics must be
re-estimated (:func:`recalibrate_bn`) before measuring accuracy, because the running
statistics a supernet keeps are a mixture over all the sub-networks it trained.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from abc import ABC, abstractmethod
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space import SearchSpace

Config = Dict[str, Any]


def load_torch_file(path, what: str) -> Any:
    """``torch.load`` with ``weights_only`` (no code runs), any failure as one clear line."""
    path = Path(path)
    if not path.is_file():
        raise HwnasError(f"{what} {path}: no such file (does not exist)")
    try:
        with warnings.catch_warnings():  # torch warns in several lines before failing on a foreign pickle
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling arbitrary bytes can fail with almost any exception type
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise HwnasError(f"{what} {path} is corrupt or not a torch file: {first}") from None


class Supernet(nn.Module, ABC):
    """A weight-sharing network over a :class:`SearchSpace` of flat configs.

    Subclasses set ``registry_name`` (their name in :data:`hwnas.supernets.SUPERNETS`)
    and ``init_kwargs`` (the constructor arguments, so a checkpoint can rebuild them).
    """

    registry_name: str = ""
    #: Elastic dimensions in progressive-shrinking order: group name -> regex over variable names.
    elastic_patterns: Dict[str, str] = {}

    def __init__(self, **init_kwargs):
        super().__init__()
        self.init_kwargs = dict(init_kwargs)
        self.meta: Dict[str, Any] = {}
        self._space: Optional[SearchSpace] = None  # subclasses build it in __init__

    # --- to implement ---------------------------------------------------------------
    @abstractmethod
    def extract(self, config: Config) -> nn.Module:
        """A standalone module with copied weights computing the same function as ``config``."""

    # --- shared -----------------------------------------------------------------------
    @property
    def space(self) -> SearchSpace:
        """Flat variables; a genome is ``space.encode(config)``."""
        return self._space

    def set_active(self, config: Config) -> None:
        """Make ``forward`` run the sub-network ``config``."""
        self.active = self.check_config(config)

    def elastic_groups(self) -> Dict[str, List[str]]:
        """Variable names per elastic dimension, in progressive-shrinking order (empty groups left out)."""
        names = [v.name for v in self.space.variables]
        if not self.elastic_patterns:
            return {"all": names}
        groups = {g: [n for n in names if re.fullmatch(p, n)] for g, p in self.elastic_patterns.items()}
        return {g: members for g, members in groups.items() if members}

    def describe(self, config: Config) -> str:
        """A short readable architecture string (reports, CSVs); families may override it."""
        return ";".join(f"{k}={v}" for k, v in config.items())

    def check_config(self, config: Config) -> Config:
        try:
            self.space.encode(config)
        except ValueError as err:
            raise HwnasError(f"invalid {self.registry_name or 'supernet'} config: {err}") from None
        return {v.name: config[v.name] for v in self.space.variables}

    def sample(self, rng: np.random.Generator, elastic: Optional[Sequence[str]] = None) -> Config:
        """A uniformly random config; with ``elastic``, only those groups vary (others at largest)."""
        return self.restrict(self.space.decode(self.space.sample(rng)[0]), elastic)

    def smallest_config(self, elastic: Optional[Sequence[str]] = None) -> Config:
        return self.restrict(self.space.decode(self.space.smallest()), elastic)

    def largest_config(self) -> Config:
        return self.space.decode(self.space.largest())

    def restrict(self, config: Config, elastic: Optional[Sequence[str]]) -> Config:
        """Hold every variable outside the ``elastic`` groups at its largest value."""
        if elastic is None:
            return config
        groups = self.elastic_groups()
        unknown = [g for g in elastic if g not in groups]
        if unknown:
            raise HwnasError(f"unknown elastic dimension(s) {unknown}; known: {', '.join(groups)}")
        free = {name for g in elastic for name in groups[g]}
        largest = self.largest_config()
        return {k: (v if k in free else largest[k]) for k, v in config.items()}


def _batchnorms(model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Re-estimate BatchNorm running statistics as the plain average over ``batches``.

    Only the BatchNorm layers run in train mode (dropout etc. stay off); the model is
    left in eval mode.
    """
    bns = _batchnorms(model)
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # None = cumulative moving average, i.e. the mean over batches
        bn.train()
    seen = 0
    for x in batches:
        model(x)
        seen += 1
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    model.eval()
    if bns and not seen:
        raise HwnasError("BatchNorm recalibration got no batches")
    return model


@torch.no_grad()
def measure_accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of ``X`` classified as ``y`` (eval mode, no grad)."""
    model.eval()
    correct = 0
    for start in range(0, len(X), batch_size):
        logits = model(X[start:start + batch_size])
        correct += int((logits.argmax(1) == y[start:start + batch_size]).sum())
    return correct / max(len(X), 1)


def calibration_batches(X: torch.Tensor, n_images: int, seed: int, batch_size: int = 250) -> List[torch.Tensor]:
    """A fixed, seeded random subset of ``X`` cut into batches (same seed -> same batches)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(X), generator=g)[: min(n_images, len(X))]
    return [X[idx[i:i + batch_size]] for i in range(0, len(idx), batch_size)]


def materialize(supernet: Supernet, config: Config, train_images: torch.Tensor, calib_images: int = 1000,
                seed: int = 0) -> nn.Module:
    """The sub-network ``config`` as it is measured and shipped: extracted, restructured by the
    compression dimensions the config has values for (pruning: narrower layers), BN recalibrated
    on a seeded subset of ``train_images``, then in its deployed form (quantization: int8 units as
    an onnxruntime QDQ model, :class:`hwnas.dimensions.quantization.QuantizedModel`). The one
    place a candidate becomes a model, so a search's accuracy, an export and an evaluation of
    the same candidate compute the same function."""
    from hwnas.dimensions import compression_of, units_of

    model = supernet.extract(config)
    dimensions = compression_of(config)
    units = units_of(supernet, config) if dimensions else []
    for dim in dimensions:
        model = dim.restructure(model, dim.own(config), units)
    batches = calibration_batches(train_images, calib_images, seed)
    recalibrate_bn(model, batches)
    for dim in dimensions:
        model = dim.deploy(model, dim.own(config), units, batches)
    return model


def subnet_accuracy(supernet: Supernet, config: Config, data, split: str = "val",
                    calib_images: int = 1000, seed: int = 0) -> float:
    """Materialize ``config`` (BN recalibrated on a seeded subset of TRAIN), measure on ``split``."""
    model = materialize(supernet, config, data.train[0], calib_images, seed)
    X, y = data.split(split)
    return measure_accuracy(model, X, y)
