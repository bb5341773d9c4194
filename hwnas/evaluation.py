"""Evaluators: what each objective or budget metric is, and how it is measured.

A *metric key* is what the experiment names: ``accuracy``, ``params``, ``flops``,
``latency_ms`` (on the first device) or ``latency_ms@NAME``. Measuring is costly and is
fanned out by an executor as :class:`SupernetMeasureTask` calls, one per candidate;
predicting is cheap and stays vectorised in process.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .config import COST_METRICS, DeviceConfig, ExperimentConfig, split_metric
from .errors import HwnasError

PROFILE_ONLY = ("energy_mJ", "power_W")  # no meter here: always predicted from the device's profile
COST_CALIB_IMAGES = 64  # BN/int8 calibration images of a model measured for costs only


@dataclass(frozen=True)
class Metric:
    key: str  # canonical key, as stored and shown
    metric: str  # accuracy, latency_ms, ...
    device: Optional[str]  # for cost metrics
    goal: Optional[str]  # "min"/"max" for objectives, None for budget-only metrics
    source: str  # "measured" or "predicted" during the search
    # Can this run measure it? Not energy/power (no meter), nor any cost of an external device.
    measurable: bool = True

    @property
    def sign(self) -> float:
        """pymoo minimises: maximised metrics are negated."""
        return -1.0 if self.goal == "max" else 1.0


def canonical_key(cfg: ExperimentConfig, key: str) -> str:
    """One spelling per metric: the device suffix only when there are several devices."""
    metric, device = split_metric(key)
    if metric not in COST_METRICS:
        return metric
    name = device or cfg.devices[0].name
    return metric if len(cfg.devices) == 1 else f"{metric}@{name}"


def experiment_metrics(cfg: ExperimentConfig, locations: Optional[Dict] = None) -> List[Metric]:
    """Objectives first (in the file's order), then metrics that only budgets name.

    ``locations``: :func:`hwnas.config.device_locations` of ``cfg`` when the caller has them already.
    """
    from .config import device_locations

    here = {name: loc.here for name, loc in (locations or device_locations(cfg)).items()}
    out: Dict[str, Metric] = {}

    def measurable(metric: str, dev) -> bool:
        return metric not in PROFILE_ONLY and (dev is None or here[dev.name])

    for key, obj in cfg.objectives.items():
        ck = canonical_key(cfg, key)
        if ck in out:
            raise HwnasError(f"objectives: {key!r} names the same metric as another objective")
        dev, metric = cfg.metric_device(key), split_metric(key)[0]
        out[ck] = Metric(ck, metric, dev.name if dev else None, obj.goal, obj.source, measurable(metric, dev))
    for b in cfg.budgets:
        ck = canonical_key(cfg, b.metric)
        if ck not in out:
            dev, metric = cfg.metric_device(b.metric), split_metric(b.metric)[0]
            ok = measurable(metric, dev)
            out[ck] = Metric(ck, metric, dev.name if dev else None, None, "measured" if ok else "predicted", ok)
    return list(out.values())


def accuracy_images(data, split: str, images: int, seed: int):
    """The images a run measures accuracy on: ``split``, or a fixed seeded subset of ``images`` of it
    (``accuracy_eval``). Shared by the search and by whatever re-checks its figures (export, evaluate)."""
    X, y = data.split(split)
    if 0 < images < len(y):
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:images]
        return X[keep], y[keep]
    return X, y


class SupernetMeasureTask:
    """Measures metrics of one sub-network: ``task((config, keys)) -> ({key: value}, seconds)``.

    Picklable and light: the supernet and the data load on first use, once per worker
    process, so a Ray actor holding this task loads them once for all its candidates.
    """

    def __init__(self, checkpoint: str, data: str, devices: Sequence[DeviceConfig], metrics: Sequence[Metric],
                 split: str = "val", calib_images: int = 1000, images: int = 0, seed: int = 0):
        self.checkpoint, self.data_spec = checkpoint, data
        self.devices = {d.name: d for d in devices}
        self.metrics = {m.key: m for m in metrics}
        self.split, self.calib_images, self.images, self.seed = split, calib_images, images, seed
        self._supernet = None
        self._data = None

    def __getstate__(self):  # ship settings, not loaded models
        state = self.__dict__.copy()
        state["_supernet"] = state["_data"] = None
        return state

    def load(self):
        if self._supernet is None:
            from hwnas.supernets import load_checkpoint
            from hwnas.supernets.datasets import load_dataset

            self._supernet = load_checkpoint(self.checkpoint)
            self._data = load_dataset(self.data_spec)
            subset = accuracy_images(self._data, self.split, self.images, self.seed)
            self._data = dataclasses.replace(self._data, **{self.split: subset})
        return self._supernet, self._data

    def __call__(self, request: Tuple[Dict, Sequence[str]]) -> Tuple[Dict[str, float], float]:
        from hwnas.devices.backends import create_backend
        from hwnas.dimensions.quantization import QuantizedModel
        from hwnas.modelstats import count_flops, count_params
        from hwnas.supernets import materialize, measure_accuracy

        config, keys = request
        supernet, data = self.load()
        start = time.perf_counter()
        # One model per request, as it ships (hwnas.supernets.materialize). Costs do not depend on
        # the weights: without accuracy, a short BN/int8 calibration gives the same layers and graph.
        wants_accuracy = any(self.metrics[k].metric == "accuracy" for k in keys)
        calib = self.calib_images if wants_accuracy else min(self.calib_images, COST_CALIB_IMAGES)
        model = materialize(supernet, config, data.train[0], calib, self.seed)
        counted = model.model if isinstance(model, QuantizedModel) else model  # int8 counts the same layers
        values: Dict[str, float] = {}
        for key in keys:
            m = self.metrics[key]
            if m.metric == "accuracy":
                values[key] = measure_accuracy(model, *data.split(self.split))
            elif m.metric == "params":
                values[key] = float(count_params(counted))
            elif m.metric == "flops":
                values[key] = float(count_flops(counted, data.input_shape))
            elif m.metric == "latency_ms":
                dev = self.devices[m.device]
                backend = create_backend(dev.backend, batch_size=dev.batch_size, threads=dev.threads,
                                         warmup=dev.warmup, repeats=dev.repeats, clock=dev.clock,
                                         statistic=dev.statistic)
                values[key] = backend.measure(model, data.input_shape).latency_ms
            else:
                raise HwnasError(f"metric {m.metric!r} cannot be measured on a supernet space yet")
        return values, time.perf_counter() - start


def objective_matrix(values: List[Dict[str, float]], metrics: Sequence[Metric]) -> np.ndarray:
    """Rows of effective values -> the matrix pymoo minimises (objectives only)."""
    objectives = [m for m in metrics if m.goal]
    return np.array([[np.nan if row[m.key] is None else row[m.key] * m.sign for m in objectives] for row in values],
                    dtype=float).reshape(len(values), len(objectives))  # NaN: unknown


def budget_slack(values: List[Dict[str, float]], cfg: ExperimentConfig) -> np.ndarray:
    """Constraint matrix (feasible where <= 0), scaled by the budget so budgets weigh alike."""
    cols = []
    for b in cfg.budgets:
        key = canonical_key(cfg, b.metric)
        v = np.array([np.nan if row[key] is None else row[key] for row in values], dtype=float)  # NaN: unknown
        slack = (v - b.value) if b.op == "<=" else (b.value - v)
        cols.append(slack / abs(b.value))
    return np.stack(cols, axis=1) if cols else np.zeros((len(values), 0))
