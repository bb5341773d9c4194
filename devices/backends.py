"""Measurement backends: time a model on a device (warm-up, repeats, median and IQR)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from hwnas.registry import Registry

BACKENDS = Registry("device backend")


@dataclass(frozen=True)
class Measurement:
    latency_ms: float  # median over repeats
    iqr_ms: float  # inter-quartile range: the timing noise
    repeats: int
    energy_mJ: Optional[float] = None
    power_W: Optional[float] = None

    def as_dict(self):
        return asdict(self)


@BACKENDS.register("torch-cpu")
class TorchCPUBackend:
    """Wall-clock latency of one forward pass of a batch with torch on this machine's CPU."""

    def __init__(self, batch_size: int = 1, threads: int = 1, warmup: int = 3, repeats: int = 15,
                 channels_last: bool = False):
        self.batch_size, self.threads = batch_size, threads
        self.warmup, self.repeats, self.channels_last = warmup, repeats, channels_last

    def measure(self, model: torch.nn.Module, input_shape: Sequence[int]) -> Measurement:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            model = model.eval()
            x = torch.randn(self.batch_size, *input_shape)
            if self.channels_last:
                model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
            times = []
            with torch.inference_mode():
                for _ in range(self.warmup):
                    model(x)
                for _ in range(self.repeats):
                    start = time.perf_counter()
                    model(x)
                    times.append((time.perf_counter() - start) * 1e3)
        finally:
            torch.set_num_threads(previous_threads)
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        return Measurement(latency_ms=float(median), iqr_ms=float(q3 - q1), repeats=len(times))


def create_backend(name: str, **settings):
    return BACKENDS.create(name, **settings)
