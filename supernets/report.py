"""How good a trained supernet is: the accuracy and latency spread of its sub-networks."""

from __future__ import annotations

import time
from typing import Any, Dict

import numpy as np
import torch
from torch import nn

from .base import Supernet, subnet_accuracy
from .elastic_mbv3 import arch_key


def cpu_latency_ms(model: nn.Module, batch: torch.Tensor, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass of ``batch`` (eval, no grad)."""
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(batch)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def tradeoff_report(net: Supernet, data, n_random: int = 20, seed: int = 0, latency_batch: int = 32) -> Dict[str, Any]:
    """Val accuracy of largest/smallest/``n_random`` random sub-networks, test accuracy of the
    extremes, and CPU latency (batch ``latency_batch`` of val images) of largest vs smallest."""
    rng = np.random.default_rng(seed)
    largest, smallest = net.largest_config(), net.smallest_config()
    random_acc = [subnet_accuracy(net, net.sample(rng), data) for _ in range(n_random)]
    batch = data.val[0][:latency_batch]
    lat_large = cpu_latency_ms(net.extract(largest), batch)
    lat_small = cpu_latency_ms(net.extract(smallest), batch)
    return {
        "val_acc_largest": subnet_accuracy(net, largest, data),
        "val_acc_smallest": subnet_accuracy(net, smallest, data),
        "test_acc_largest": subnet_accuracy(net, largest, data, split="test"),
        "test_acc_smallest": subnet_accuracy(net, smallest, data, split="test"),
        f"val_acc_random{n_random}": {"min": min(random_acc), "median": float(np.median(random_acc)),
                                      "max": max(random_acc)},
        f"cpu_latency_ms_batch{latency_batch}": {"largest": lat_large, "smallest": lat_small,
                                                 "ratio": lat_large / lat_small, "threads": torch.get_num_threads()},
        "arch_key_largest": arch_key(largest),
        "arch_key_smallest": arch_key(smallest),
    }
