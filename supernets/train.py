"""Supernet training: sandwich rule with in-place knowledge distillation (OFA / BigNAS).

Each step trains the largest sub-network on the labels, then the smallest and
``num_random`` random ones on the labels plus the largest's soft predictions (KL),
accumulating gradients into one optimizer step. Optionally the elastic dimensions are
opened progressively (OFA's progressive shrinking: resolution -> kernel -> depth ->
expand). Training state is saved after every epoch and can be resumed; randomness is
derived from (seed, epoch), so a resumed run continues exactly as an unbroken one.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from hwnas.errors import HwnasError

from .base import Supernet, subnet_accuracy
from .datasets import DatasetSplits

# Settings that may change between a run and its resumption without changing its result.
RESUMABLE_DIFFERENCES = ("threads", "progress", "eval_every")


@dataclass
class TrainSettings:
    epochs: int = 7
    batch_size: int = 64
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-5
    label_smoothing: float = 0.0
    num_random: int = 2  # random sub-networks per step, besides largest and smallest
    kd_ratio: float = 1.0  # weight of the distillation loss for the non-largest sub-networks
    kd_temperature: float = 1.0
    grad_clip: float = 5.0
    augment: bool = False  # random flips and +-2 px shifts (for long runs; short ones learn faster without)
    progressive: bool = False  # OFA's progressive shrinking instead of everything elastic from the start
    channels_last: bool = True  # depthwise convolutions train ~2x faster on CPU in NHWC
    seed: int = 0
    threads: int = 2
    progress: bool = True
    eval_every: int = 1  # epochs between val checks of largest/smallest (0 = never)

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adamw"):
            raise HwnasError(f"unknown optimizer {self.optimizer!r}; allowed: sgd, adamw")
        if self.epochs < 1 or self.batch_size < 1 or self.num_random < 0:
            raise HwnasError("epochs and batch_size must be >= 1 and num_random >= 0")


@dataclass
class TrainResult:
    history: List[Dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the epochs run in this call
    resumed_from_epoch: int = 0


def progressive_phases(supernet: Supernet, epochs: int, progressive: bool) -> List[Optional[List[str]]]:
    """The elastic groups open in each epoch (``None`` = everything elastic)."""
    if not progressive:
        return [None] * epochs
    order = list(supernet.elastic_groups())
    return [order[: 1 + e * len(order) // epochs] for e in range(epochs)]


def augment_batch(x: torch.Tensor, generator: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random horizontal flip and random translation by up to ``shift`` pixels (edge-replicated)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, (shift,) * 4, mode="replicate").permute(0, 2, 3, 1)  # N x H x W x C for gathering
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2).contiguous()


def _make_optimizer(net: Supernet, s: TrainSettings, total_steps: int):
    # Decay conv/linear weights only: not BN/bias (1-D), nor the identity-initialised kernel transforms.
    decay = [p for n, p in net.named_parameters() if p.ndim > 1 and "kernel_transforms" not in n]
    ids = {id(p) for p in decay}
    no_decay = [p for p in net.parameters() if id(p) not in ids]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if s.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=s.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    return opt, sched


def sandwich_step(net: Supernet, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator,
                  elastic: Optional[Sequence[str]], s: TrainSettings) -> float:
    """Accumulate the gradients of one sandwich step; returns the largest sub-network's loss."""
    net.set_active(net.largest_config())
    logits = net(x)
    loss = F.cross_entropy(logits, y, label_smoothing=s.label_smoothing)
    loss.backward()
    teacher = F.softmax(logits.detach() / s.kd_temperature, dim=1)
    students = [net.smallest_config(elastic)] + [net.sample(rng, elastic) for _ in range(s.num_random)]
    for config in students:
        net.set_active(config)
        out = net(x)
        kd = F.kl_div(F.log_softmax(out / s.kd_temperature, dim=1), teacher, reduction="batchmean")
        (F.cross_entropy(out, y, label_smoothing=s.label_smoothing) + s.kd_ratio * s.kd_temperature ** 2 * kd).backward()
    return loss.item()


def _train_epoch(net: Supernet, train: Tuple[torch.Tensor, torch.Tensor], s: TrainSettings, epoch: int,
                 elastic: Optional[Sequence[str]], opt, sched, memory_format) -> Iterator[float]:
    """One pass over ``train``; yields each step's loss. All randomness (order, augmentation,
    sampled sub-networks, dropout) derives from (seed, epoch), which makes resuming exact."""
    X, Y = train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed * 100_003 + epoch)  # dropout draws from the global generator
        gen = torch.Generator().manual_seed(s.seed * 100_003 + epoch)
        rng = np.random.default_rng([s.seed, epoch])
        order = torch.randperm(len(X), generator=gen)
        net.train()
        for start in range(0, len(X), s.batch_size):
            idx = order[start:start + s.batch_size]
            x = augment_batch(X[idx], gen) if s.augment else X[idx]
            opt.zero_grad(set_to_none=True)
            loss = sandwich_step(net, x.contiguous(memory_format=memory_format), Y[idx], rng, elastic, s)
            if s.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), s.grad_clip)
            opt.step()
            sched.step()
            yield loss


def _save_state(path: Path, state: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave a half-written state behind


def _load_state(path: Path, net: Supernet, settings: TrainSettings, opt, sched) -> Dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["settings"]
        net.load_state_dict(state["supernet"]["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except (KeyError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise HwnasError(f"cannot resume from training state {path}: {str(err).splitlines()[0]}") from None
    changed = [k for k, v in asdict(settings).items() if k not in RESUMABLE_DIFFERENCES and saved.get(k) != v]
    if changed:
        raise HwnasError(f"training state {path} was made with different settings ({', '.join(changed)}); "
                         f"use the same settings or a new state file")
    return state


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), disable=not enabled, transient=False)


def train_supernet(net: Supernet, data: DatasetSplits, settings: Optional[TrainSettings] = None,
                   state_path: Optional[Path] = None, resume: bool = True,
                   on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None) -> TrainResult:
    """Train ``net`` in place on ``data.train`` (val is only used for monitoring)."""
    from . import checkpoint_dict  # the package imports this module

    s = settings or TrainSettings()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    steps_per_epoch = math.ceil(len(data.train[0]) / s.batch_size)
    opt, sched = _make_optimizer(net, s, s.epochs * steps_per_epoch)
    phases = progressive_phases(net, s.epochs, s.progressive)
    result, start_epoch = TrainResult(), 0
    state_path = Path(state_path) if state_path else None
    if state_path and resume and state_path.is_file():
        state = _load_state(state_path, net, s, opt, sched)
        start_epoch, result.history = int(state["epoch"]), list(state["history"])
        result.resumed_from_epoch = start_epoch
    memory_format = torch.channels_last if s.channels_last else torch.contiguous_format
    net.to(memory_format=memory_format)
    t_start = time.perf_counter()
    try:
        with _progress(s.progress) as bar:
            task = bar.add_task("supernet", total=(s.epochs - start_epoch) * steps_per_epoch, status="")
            for epoch in range(start_epoch, s.epochs):
                t_epoch = time.perf_counter()
                losses = []
                for loss in _train_epoch(net, data.train, s, epoch, phases[epoch], opt, sched, memory_format):
                    losses.append(loss)
                    bar.update(task, advance=1, status=f"epoch {epoch + 1}/{s.epochs} loss {np.mean(losses):.3f}")
                record = {"epoch": epoch + 1, "loss_largest": float(np.mean(losses)),
                          "seconds": time.perf_counter() - t_epoch, "elastic": phases[epoch] or "all",
                          "lr": sched.get_last_lr()[0]}
                if s.eval_every and ((epoch + 1) % s.eval_every == 0 or epoch + 1 == s.epochs):
                    record["val_largest"] = subnet_accuracy(net, net.largest_config(), data, calib_images=500)
                    record["val_smallest"] = subnet_accuracy(net, net.smallest_config(phases[epoch]), data,
                                                             calib_images=500)
                    bar.console.log(f"epoch {epoch + 1}: loss {record['loss_largest']:.3f}, val largest "
                                    f"{record['val_largest']:.4f}, smallest {record['val_smallest']:.4f}, "
                                    f"{record['seconds']:.0f} s")
                result.history.append(record)
                if state_path:
                    net.to(memory_format=torch.contiguous_format)
                    _save_state(state_path, {"supernet": checkpoint_dict(net), "optimizer": opt.state_dict(),
                                             "scheduler": sched.state_dict(), "epoch": epoch + 1,
                                             "settings": asdict(s), "history": result.history})
                    net.to(memory_format=memory_format)
                if on_epoch:
                    on_epoch(record)
    finally:
        net.to(memory_format=torch.contiguous_format)
        net.set_active(net.largest_config())
        net.eval()
        torch.set_num_threads(old_threads)
    result.seconds = time.perf_counter() - t_start
    return result
