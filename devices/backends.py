"""Measurement backends: time a model on a device (warm-up, repeats, a robust statistic and IQR).

Methodology shared by every backend (:func:`time_interleaved`): ``warmup`` untimed runs,
then timed runs in short rounds (``per_round`` runs of each model per round, models
interleaved round by round, so a slow spell of a shared machine hits them alike) until
the median is stable - the half-width of its 95 % confidence interval (the boxplot-notch
estimate ``1.57 * IQR / sqrt(n)``) is below ``rel_ci`` of the median - or ``max_repeats``
runs were made. The latency is the ``statistic`` of the runs: ``min`` (the default), which is
what reproduces on a shared or virtualised machine, where interference only ever adds time
(benchmarks/devices_lut.py), or ``median``. The median and the IQR (the timing noise) are
stored either way.

Energy, when the hardware exposes a counter: RAPL package energy on Linux CPUs
(``/sys/class/powercap/intel-rapl*/energy_uj``, the whole package, so other processes on
the same CPU count too) and NVML on NVIDIA GPUs. Backends whose hardware is absent raise
:class:`HwnasError` saying "skipped: ..." so callers and tests can skip with that reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import math
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from hwnas.errors import HwnasError
from hwnas.registry import Registry

BACKENDS = Registry("device backend")
RAPL_GLOB = "/sys/class/powercap/intel-rapl*/energy_uj"
# "wall": elapsed time (what a user waits). "cpu": CPU time of the timing thread - with one
# thread doing all the work it is the latency the model would have on an idle core, and it
# does not count time other processes hold the core (use it on a shared machine).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
STATISTICS = {"median": np.median, "min": np.min}


@dataclass(frozen=True)
class Measurement:
    latency_ms: float  # the backend's statistic (median or min) over repeats
    iqr_ms: float  # inter-quartile range: the timing noise
    repeats: int
    energy_mJ: Optional[float] = None  # per forward pass of the batch, from a hardware counter
    power_W: Optional[float] = None
    energy_source: Optional[str] = None  # "rapl" or "nvml" when energy was measured
    median_ms: Optional[float] = None
    segments_ms: Optional[Tuple[float, ...]] = None  # per segment, with :class:`SegmentTimer` runs

    def as_dict(self):
        return asdict(self)

    @property
    def noise(self) -> float:
        """IQR relative to the median."""
        centre = self.median_ms or self.latency_ms
        return self.iqr_ms / centre if centre > 0 else float("nan")


# --------------------------------------------------------------------------- energy counters
class RaplCounter:
    """Cumulative CPU package energy (micro-joules) from Linux powercap, summed over packages.

    Only top-level packages (``intel-rapl:N``) are summed; their sub-zones (core, dram)
    are already part of the package figure.
    """

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)
        self.ranges = []
        for p in self.paths:
            limit = Path(p).with_name("max_energy_range_uj")
            self.ranges.append(int(limit.read_text()) if limit.exists() else 2**32)

    @classmethod
    def open(cls) -> Optional["RaplCounter"]:
        """The counter if readable here, else None (no powercap, or not permitted)."""
        paths = [p for p in sorted(glob.glob(RAPL_GLOB)) if Path(p).parent.name.count(":") == 1]
        try:
            counter = cls(paths) if paths else None
            if counter is not None:
                counter.read()
            return counter
        except (OSError, ValueError):
            return None

    def read(self) -> List[int]:
        return [int(Path(p).read_text()) for p in self.paths]

    def joules_between(self, before: Sequence[int], after: Sequence[int]) -> float:
        total = 0
        for b, a, r in zip(before, after, self.ranges):
            total += a - b if a >= b else a + r - b  # the counter wrapped
        return total / 1e6


def rapl_available() -> bool:
    return RaplCounter.open() is not None


# --------------------------------------------------------------------------- timing loop
class SegmentTimer:
    """A run of ``model(x)`` that also times the model's parts where they run, inside it.

    The forward pre-hooks of ``boundaries`` (sub-modules, in execution order) mark where
    each segment ends: segment 0 runs from the call to the first boundary, the last from
    the last boundary to the return. Timing parts in place keeps the caches, memory
    allocator and neighbours of a real run, so the segments add up to the whole; parts
    timed alone do not (benchmarks/devices_lut.py measures both).
    """

    def __init__(self, run: Callable[[], object], boundaries: Sequence[torch.nn.Module],
                 clock: Callable[[], float]):
        self.run, self.marks = run, []
        self.handles = [m.register_forward_pre_hook(lambda *_: self.marks.append(clock())) for m in boundaries]
        self.n_segments = len(boundaries) + 1

    def __call__(self):
        self.marks.clear()
        return self.run()

    def segments(self, start: float, end: float) -> List[float]:
        if len(self.marks) != self.n_segments - 1:
            raise HwnasError(f"segment timing: {len(self.marks)} of {self.n_segments - 1} boundaries ran "
                             "(a boundary module is not on the model's forward path)")
        return np.diff([start, *self.marks, end]).tolist()

    def close(self):
        for handle in self.handles:
            handle.remove()


def time_interleaved(runs: Sequence[Callable[[], object]], warmup: int = 3, repeats: int = 15,
                     max_repeats: Optional[int] = None, rel_ci: float = 0.02, sync: Callable[[], None] = lambda: None,
                     energy: Optional[Callable[[], Optional[float]]] = None,
                     clock: Callable[[], float] = time.perf_counter, per_round: int = 3,
                     statistic: str = "min") -> List[Measurement]:
    """Time several callables in rounds: per round, each item runs once untimed, then ``per_round`` timed.

    Short interleaved rounds spread every item's runs over the whole measurement, so a
    slow spell of a shared machine (another job starting, a noisy neighbour of the VM)
    hits all items alike instead of a few; the untimed run per round puts the item's
    weights and input back in cache, as they are when it runs inside a network.
    ``clock``: wall clock by default; ``time.thread_time`` gives the CPU time of the calling
    thread, which excludes the time other processes hold the core. ``energy``: a callable
    returning joules used since its last call (read around every run), or None.
    """
    if statistic not in STATISTICS:
        raise HwnasError(f"backend settings: unknown statistic {statistic!r}; allowed: {', '.join(STATISTICS)}")
    with exclusive_timing():
        return _time_interleaved(runs, warmup, repeats, max_repeats, rel_ci, sync, energy, clock, per_round,
                                 statistic)


TIMING_LOCK = Path(tempfile.gettempdir()) / "hwnas-timing.lock"


@contextlib.contextmanager
def exclusive_timing():
    """One timing at a time on this host: parallel workers (Ray actors, a second run) wait for the
    lock instead of timing at once and skewing each other's latency. Held only while timing."""
    try:
        handle = open(TIMING_LOCK, "a")
    except OSError:  # a lock file this user cannot open (another user's): time without it
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _time_interleaved(runs, warmup, repeats, max_repeats, rel_ci, sync, energy, clock, per_round,
                      statistic) -> List[Measurement]:
    max_repeats = max(repeats, max_repeats if max_repeats is not None else 3 * repeats)
    for run in runs:
        for _ in range(warmup):
            run()
    sync()
    times: List[List[float]] = [[] for _ in runs]
    segments: List[List[List[float]]] = [[] for _ in runs]
    joules = [0.0 for _ in runs]
    walls = [0.0 for _ in runs]
    pending = list(range(len(runs)))
    while pending:
        for i in pending:
            runs[i]()  # re-warm: the other items' runs evicted this one's data from the caches
            sync()
            target = repeats if len(times[i]) < repeats else max_repeats
            for _ in range(min(per_round, target - len(times[i]))):
                if energy is not None:
                    energy()
                wall, start = time.perf_counter(), clock()
                runs[i]()
                sync()
                end = clock()
                times[i].append((end - start) * 1e3)
                if isinstance(runs[i], SegmentTimer):
                    segments[i].append([t * 1e3 for t in runs[i].segments(start, end)])
                walls[i] += time.perf_counter() - wall
                if energy is not None:
                    joules[i] += energy() or 0.0
        pending = [i for i in pending if len(times[i]) < repeats
                   or (len(times[i]) < max_repeats and not _stable(times[i], rel_ci))]
    out = []
    for t, seg, j, w in zip(times, segments, joules, walls):
        q1, median, q3 = np.percentile(t, [25, 50, 75])
        per_segment = tuple(float(v) for v in STATISTICS[statistic](np.array(seg), axis=0)) if seg else None
        m = Measurement(latency_ms=float(STATISTICS[statistic](t)), iqr_ms=float(q3 - q1), repeats=len(t),
                        median_ms=float(median), segments_ms=per_segment)
        if energy is not None:
            m = replace(m, energy_mJ=j * 1e3 / len(t), power_W=j / w, energy_source=getattr(energy, "source", None))
        out.append(m)
    return out


def _stable(times: Sequence[float], rel_ci: float) -> bool:
    """The median's 95 % confidence half-width (boxplot notch) is within ``rel_ci`` of it."""
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return 1.57 * (q3 - q1) / math.sqrt(len(times)) <= rel_ci * median


def time_runs(run: Callable[[], object], **settings) -> Measurement:
    """Time one callable (:func:`time_interleaved` with one item)."""
    return time_interleaved([run], **settings)[0]


def _rapl_meter() -> Optional[Callable[[], Optional[float]]]:
    counter = RaplCounter.open()
    if counter is None:
        return None
    last = [counter.read()]

    def meter():
        now = counter.read()
        joules = counter.joules_between(last[0], now)
        last[0] = now
        return joules

    meter.source = "rapl"
    return meter


# --------------------------------------------------------------------------- backends
_WARMED_UP = False  # has this process timed anything yet (see _Backend._time)


class _Backend:
    """Settings shared by all backends (what a device profile stores)."""

    def __init__(self, batch_size: int = 1, threads: int = 1, warmup: int = 3, repeats: int = 15,
                 max_repeats: Optional[int] = None, rel_ci: float = 0.02, channels_last: bool = False,
                 clock: str = "wall", statistic: str = "min", per_round: int = 3):
        if batch_size < 1 or threads < 1 or repeats < 1 or warmup < 0:
            raise HwnasError("backend settings: batch_size, threads and repeats must be >= 1, warmup >= 0")
        if clock not in CLOCKS:
            raise HwnasError(f"backend settings: unknown clock {clock!r}; allowed: {', '.join(CLOCKS)}")
        if clock == "cpu" and threads != 1:
            raise HwnasError("backend settings: clock 'cpu' (thread CPU time) needs threads=1")
        if statistic not in STATISTICS:
            raise HwnasError(f"backend settings: unknown statistic {statistic!r}; allowed: {', '.join(STATISTICS)}")
        if per_round < 1:
            raise HwnasError("backend settings: per_round must be >= 1")
        self.clock, self.statistic, self.per_round = clock, statistic, per_round
        self.batch_size, self.threads = batch_size, threads
        self.warmup, self.repeats, self.max_repeats, self.rel_ci = warmup, repeats, max_repeats, rel_ci
        self.channels_last = channels_last

    def _time(self, runs, **extra) -> List[Measurement]:
        """:func:`time_interleaved` with this backend's settings. The first timing in a process times its
        items once more first and discards that pass: a fresh process's (or Ray worker's) first timings
        came out up to 1.4x slow (a quickstart run's first front member, benchmarks/export.py)."""
        global _WARMED_UP
        if not _WARMED_UP:
            _WARMED_UP = True
            time_interleaved(runs, **{**self._timing(**extra), "energy": None})
        return time_interleaved(runs, **self._timing(**extra))

    def _timing(self, **extra):
        return dict(warmup=self.warmup, repeats=self.repeats, max_repeats=self.max_repeats, rel_ci=self.rel_ci,
                    clock=CLOCKS[self.clock], statistic=self.statistic, per_round=self.per_round, **extra)

    def measure(self, model: torch.nn.Module, input_shape: Sequence[int]) -> Measurement:
        return self.measure_many([(model, input_shape)])[0]

    def measure_many(self, items):  # pragma: no cover - abstract
        raise NotImplementedError

    def _input(self, input_shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(self.batch_size, *input_shape, generator=torch.Generator().manual_seed(0))


@BACKENDS.register("torch-cpu")
class TorchCPUBackend(_Backend):
    """Latency of one forward pass of a batch with torch on this machine's CPU.

    RAPL energy per pass is attached when the powercap counters are readable. Items may
    name boundary sub-modules, ``(model, input_shape, boundaries)``: the measurement then
    also times each segment in place (:class:`SegmentTimer`).
    """

    times_segments = True

    def _run(self, model: torch.nn.Module, input_shape: Sequence[int]) -> Callable[[], object]:
        if getattr(model, "deployed_onnx", None) is not None:  # its forward would time onnxruntime
            raise HwnasError("torch-cpu cannot run int8 (QDQ) units; measure quantized candidates with "
                             "onnxruntime-cpu")
        model = model.eval()
        x = self._input(input_shape)
        if self.channels_last and x.dim() == 4:
            model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        return lambda: model(x)

    def measure_many(self, items: Sequence[tuple]) -> List[Measurement]:
        """Measure (model, input_shape[, boundaries]) items interleaved (see :func:`time_interleaved`)."""
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        runs = []
        try:
            with torch.inference_mode():
                for model, shape, *boundaries in items:
                    run = self._run(model, shape)
                    runs.append(SegmentTimer(run, boundaries[0], CLOCKS[self.clock]) if boundaries else run)
                return self._time(runs, energy=_rapl_meter())
        finally:
            for run in runs:
                if isinstance(run, SegmentTimer):
                    run.close()
            torch.set_num_threads(previous_threads)


@BACKENDS.register("onnxruntime-cpu")
class OnnxRuntimeCPUBackend(_Backend):
    """The model exported to ONNX (``torch.onnx.export``), run by an onnxruntime CPU session."""

    def session(self, model: torch.nn.Module, input_shape: Sequence[int]):
        from .onnx import INPUT_NAME, session, to_onnx

        x = self._input(input_shape)
        try:
            onnx_bytes = to_onnx(model, x)
        except HwnasError as err:
            raise HwnasError(f"onnxruntime-cpu: {err}") from None
        return session(onnx_bytes, self.threads), {INPUT_NAME: x.numpy()}

    def measure_many(self, items: Sequence[Tuple[torch.nn.Module, Sequence[int]]]) -> List[Measurement]:
        runs = []
        for model, shape in items:
            session, feeds = self.session(model, shape)
            runs.append(lambda session=session, feeds=feeds: session.run(None, feeds))
        return self._time(runs, energy=_rapl_meter())

    def measure_sessions(self, items: Sequence[Tuple[object, Sequence[int]]]) -> List[Measurement]:
        """Time ONNX models already in sessions, each on an input of its shape, interleaved.

        One session (of a model with free image sizes) may serve several items, and items of one
        shape share one input array: a lookup table of thousands of entries needs neither a
        session nor an input per entry (:mod:`hwnas.devices.lut`).
        """
        from .onnx import INPUT_NAME

        inputs: dict = {}
        runs = []
        for session, shape in items:
            shape = tuple(shape)
            if shape not in inputs:
                inputs[shape] = {INPUT_NAME: self._input(shape).numpy()}
            runs.append(lambda session=session, feeds=inputs[shape]: session.run(None, feeds))
        return time_interleaved(runs, energy=_rapl_meter(), **self._timing())


@BACKENDS.register("torch-cuda")
class TorchCUDABackend(_Backend):
    """Latency with CUDA-event-free wall clock around synchronised runs; NVML energy/power.

    Energy comes from NVML's total-energy counter (Volta and newer) when ``pynvml``
    (package ``nvidia-ml-py``) is installed; otherwise latency only.
    """

    def __init__(self, device_index: int = 0, **settings):
        super().__init__(**settings)
        if self.clock == "cpu":
            raise HwnasError("torch-cuda: clock 'cpu' measures the host thread, not the GPU; use 'wall'")
        if not torch.cuda.is_available():
            raise HwnasError("torch-cuda skipped: no CUDA device")
        if device_index >= torch.cuda.device_count():
            raise HwnasError(f"torch-cuda skipped: no CUDA device {device_index} "
                             f"({torch.cuda.device_count()} present)")
        self.device_index = device_index

    def _nvml_meter(self):
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
            last = [pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)]  # millijoules
        except pynvml.NVMLError:
            return None

        def meter():
            now = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            joules = (now - last[0]) / 1e3
            last[0] = now
            return joules

        meter.source = "nvml"
        return meter

    def measure_many(self, items: Sequence[Tuple[torch.nn.Module, Sequence[int]]]) -> List[Measurement]:
        device = torch.device("cuda", self.device_index)
        runs = []
        for model, shape in items:
            model, x = model.eval().to(device), self._input(shape).to(device)
            if self.channels_last and x.dim() == 4:
                model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
            runs.append(lambda model=model, x=x: model(x))
        with torch.inference_mode():
            return self._time(runs, sync=lambda: torch.cuda.synchronize(device), energy=self._nvml_meter())


def create_backend(name: str, **settings):
    return BACKENDS.create(name, **settings)
