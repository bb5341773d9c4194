"""``hwnas devices measure``: build a device's lookup table and samples on a backend.

For a supernet space: every table entry (:mod:`hwnas.devices.lut`) and the space's 10
reference sub-networks (whole, the calibration samples) are timed on the backend. When
the device profile names a ``ray_resource`` (e.g. ``device:jetson``), the job runs as a
Ray task requiring one unit of that custom resource, i.e. on the node that holds the
device; the driver then writes the results into its registry.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from hwnas.errors import HwnasError

from .backends import BACKENDS, create_backend
from .registry import DeviceSpec, Samples, check_name, find_device, save_device
from .spaces import SupernetDeviceSpace, device_space

DEFAULT_SETTINGS = {"batch_size": 32, "threads": 1, "clock": "wall", "statistic": "min"}
# 15 to 45 timings each (the stopping rule ends early when the timings are steady).
DEFAULT_TIMING = {"repeats": 15, "max_repeats": 45}
# Whole sub-networks timed to calibrate the table: the 10 references and 30 seeded random ones
# (a whole network costs about as much as 30 table entries; 40 keep a per-stage fit steady).
N_CALIBRATION = 40
CALIBRATION_SEED = 20261123
KIND_OF_BACKEND = {"torch-cpu": "cpu", "onnxruntime-cpu": "cpu", "torch-cuda": "gpu"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibration_archs(dspace: SupernetDeviceSpace, n: int = N_CALIBRATION) -> List[str]:
    """The 10 reference sub-networks, then up to ``n - 10`` more seeded random ones (the same for a space)."""
    archs = dspace.reference_archs()
    rng, seen = np.random.default_rng(CALIBRATION_SEED), set(archs)
    for genome in dspace.space.sample(rng, 20 * n):  # a small space may hold fewer than n
        arch = dspace.format_arch(genome)
        if len(archs) < n and arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs


def measure_job(space: str, backend: str, settings: dict, progress: Optional[Callable[[str], None]] = None,
                table_timing: Optional[str] = None) -> dict:
    """Measure table and calibration samples of ``space`` here; returns plain data (Ray-safe)."""
    from .lut import ALONE, IN_CONTEXT, measure_table

    dspace = device_space(space)
    if not isinstance(dspace, SupernetDeviceSpace):
        raise HwnasError(f"measure needs a supernet space (e.g. elastic_mbv3); for the tabular space {space!r} "
                         f"time the architectures of 'hwnas devices refs --space {space}' with your own tooling "
                         "and use 'hwnas devices add'")
    runner = create_backend(backend, **settings)
    # In context where the backend can time parts of a running model: calibrated, it predicted
    # 76-90 % of sub-networks within 10 % where parts timed alone gave 70 % (benchmarks/devices_lut.py).
    table_timing = table_timing or (IN_CONTEXT if getattr(runner, "times_segments", False) else ALONE)
    # The first table timed in a fresh process came out off the whole networks timed after it
    # (calibrated, 48-86 % within 10 % in five runs, where a second table in the same process gave
    # 84-96 %: benchmarks/devices_lut.py): a short pass over the parts first, results discarded.
    if progress:
        progress("warming up")
    measure_table(dspace, create_backend(backend, **{**settings, "repeats": 3, "max_repeats": 3}),
                  method=table_timing)
    report = (lambda done, total: progress(f"lookup table {done}/{total}")) if progress else None
    entries = measure_table(dspace, runner, report, method=table_timing)
    archs = calibration_archs(dspace)
    models = [dspace.supernet.extract(dspace.space.decode(dspace.parse_arch(a))) for a in archs]
    if progress:
        progress(f"{len(archs)} whole sub-networks (calibration)")
    measured = runner.measure_many([(m, dspace.input_shape) for m in models])
    rows = [{"arch": a, **{k: v for k, v in m.as_dict().items() if v is not None}} for a, m in zip(archs, measured)]
    return {"entries": entries, "method": table_timing, "samples": rows, "host": socket.gethostname(),
            "node": _ray_node_id(), "hardware": cpu_name() if KIND_OF_BACKEND.get(backend) == "cpu" else ""}


# Whole compressed sub-networks timed to calibrate a compressed table: a per-stage fit with separate
# fp32 and int8 coefficients has 2 x (stages + 1) + 1 of them (9 on the default supernet), 5+ samples each.
N_COMPRESSED_CALIBRATION = 60


def compressed_calibration_configs(dspace: SupernetDeviceSpace, options: Dict[str, dict],
                                   n: Optional[int] = None) -> List[dict]:
    """Flat joint configs: the smallest and largest joint sub-networks, then seeded random ones."""
    from hwnas.dimensions import JointSpace

    n = n or N_COMPRESSED_CALIBRATION

    space = JointSpace(dspace.supernet, ["architecture", *options], options).space
    genomes = [space.smallest(), space.largest()]
    seen = {space.key(g) for g in genomes}
    for g in space.sample(np.random.default_rng(CALIBRATION_SEED), 20 * n):
        if len(genomes) < n and space.key(g) not in seen:
            seen.add(space.key(g))
            genomes.append(g)
    return [space.decode(g) for g in genomes]


def compressed_models(dspace: SupernetDeviceSpace, configs: List[dict]) -> list:
    """The models the search measures for ``configs`` (:func:`hwnas.supernets.materialize`: pruned layers,
    int8 units as QDQ); BatchNorm statistics and int8 ranges come from random inputs, which set numbers,
    not layers, so latency is the same."""
    import torch

    from hwnas.supernets import materialize

    from .lut import CALIBRATION_IMAGES

    images = torch.randn(CALIBRATION_IMAGES, *dspace.input_shape, generator=torch.Generator().manual_seed(0))
    return [materialize(dspace.supernet, c, images, CALIBRATION_IMAGES, 0) for c in configs]


def measure_compressed_job(space: str, backend: str, settings: dict, options: Dict[str, dict],
                           progress: Optional[Callable[[str], None]] = None) -> dict:
    """Measure the compressed table of ``space`` (``options``: dimension -> choices) and its calibration here."""
    from .lut import measure_compressed_table

    dspace = device_space(space)
    runner = create_backend(backend, **settings)
    entries = measure_compressed_table(dspace, runner, options, progress)
    configs = compressed_calibration_configs(dspace, options)
    if progress:
        progress(f"{len(configs)} whole compressed sub-networks (calibration)")
    measured = runner.measure_many([(m, dspace.input_shape) for m in compressed_models(dspace, configs)])
    rows = [{"config": c, "latency_ms": m.latency_ms, "median_ms": m.median_ms, "iqr_ms": m.iqr_ms}
            for c, m in zip(configs, measured)]
    return {"entries": entries, "samples": rows, "host": socket.gethostname(), "node": _ray_node_id(),
            "hardware": cpu_name() if KIND_OF_BACKEND.get(backend) == "cpu" else ""}


def _ray_node_id() -> Optional[str]:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # not inside Ray
        return None


def _run_on_ray(resource: str, *args, job=measure_job) -> dict:
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)
    if resource not in ray.cluster_resources():
        raise HwnasError(f"no Ray node offers the resource {resource!r} (start the device's node with "
                         f"--resources='{{\"{resource}\": 1}}')")
    task = ray.remote(num_cpus=1, resources={resource: 1}, max_retries=0)(job)
    try:
        return ray.get(task.remote(*args))
    except ray.exceptions.RayTaskError as err:
        cause = err.as_instanceof_cause()
        if isinstance(cause, HwnasError):
            raise HwnasError(str(cause).splitlines()[0]) from None
        raise


def measure_device(name: str, space: str, backend: str = "torch-cpu", batch_size: Optional[int] = None,
                   threads: Optional[int] = None, home: Optional[os.PathLike] = None,
                   hardware: Optional[str] = None, ray_resource: Optional[str] = None,
                   progress: Optional[Callable[[str], None]] = None, table_timing: Optional[str] = None,
                   clock: Optional[str] = None, statistic: Optional[str] = None,
                   dimensions: Optional[Dict[str, dict]] = None, **timing) -> Dict:
    """Measure ``space`` on ``backend`` for device ``name`` and store table + samples in its profile.

    Settings not given come from the existing profile, else batch 32, 1 thread, wall clock,
    minimum of the runs (the profile keeps them: a run on the device times alike); ``timing``
    (warmup, repeats, max_repeats, rel_ci) goes to the backend. Returns a
    summary: entries and samples counts, noise (median IQR / median), where it ran.

    ``dimensions`` (compression dimension -> its choices, e.g. ``{"pruning": {"keep": [0.5, 1.0]},
    "quantization": {}}``): measure the compressed table ``lut-compressed-<space>.json`` instead
    (onnxruntime-cpu only), leaving the profile's architecture table and samples as they are.
    """
    if backend not in BACKENDS:
        raise HwnasError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS.names())}")
    dspace = device_space(space)
    if not isinstance(dspace, SupernetDeviceSpace):
        measure_job(space, backend, {})  # raises the explanation
    check_name(name)
    existing = find_device(name, home)
    fields = existing.spec.model_dump() if existing is not None else {"name": name}
    settings = dict(DEFAULT_SETTINGS)
    settings.update({k: fields[k] for k in DEFAULT_SETTINGS if fields.get(k)})
    given = dict(batch_size=batch_size, threads=threads, clock=clock, statistic=statistic)
    settings.update({k: v for k, v in given.items() if v is not None})
    runner_settings = {**settings, **DEFAULT_TIMING, **timing}
    resource = ray_resource or fields.get("ray_resource")
    args = (dspace.name, backend, runner_settings)
    if dimensions is not None:
        return _measure_compressed(dspace, backend, dimensions, fields, settings, runner_settings, resource,
                                   existing, home, hardware, progress)
    result = (_run_on_ray(resource, *args, None, table_timing) if resource
              else measure_job(*args, progress, table_timing))

    from .lut import lut_document

    rows = result["samples"]
    genomes = np.stack([dspace.parse_arch(r["arch"]) for r in rows])
    values = {"latency_ms": np.array([r["latency_ms"] for r in rows]),
              "latency_median_ms": np.array([r["median_ms"] for r in rows]),
              "latency_iqr_ms": np.array([r["iqr_ms"] for r in rows])}
    for metric in ("energy_mJ", "power_W"):
        if all(metric in r for r in rows):
            values[metric] = np.array([r[metric] for r in rows])
    samples = Samples(dspace.name, [r["arch"] for r in rows], genomes, values)
    fields.update(settings, backend=backend, ray_resource=resource)
    fields.setdefault("kind", KIND_OF_BACKEND.get(backend, "other"))
    if hardware or not fields.get("hardware"):
        fields["hardware"] = hardware or result["hardware"]
    fields["source"] = f"measured with hwnas devices measure ({backend}) on host {result['host']}"
    fields["host"] = result["host"]
    fields["labels"] = [label for label in fields.get("labels", []) if label != "shipped"]
    fields["spaces"] = {**fields.get("spaces", {}), dspace.slug: dspace.name}
    files = {f"samples-{dspace.slug}.csv": samples,
             f"lut-{dspace.slug}.json": lut_document(dspace, result["entries"], {"name": backend, **runner_settings},
                                                     result["method"])}
    profile = save_device(DeviceSpec(**{k: v for k, v in fields.items() if v is not None}), files, home,
                          base=existing)
    entry_noise = [e["iqr_ms"] / e["latency_ms"] for e in result["entries"].values()]
    sample_noise = [r["iqr_ms"] / r["median_ms"] for r in rows]
    return {"profile": profile, "entries": len(result["entries"]), "samples": len(rows),
            "noise_entries": float(np.median(entry_noise)), "noise_samples": float(np.median(sample_noise)),
            "host": result["host"], "node": result["node"], "settings": settings}


def _measure_compressed(dspace, backend, dimensions, fields, settings, runner_settings, resource, existing, home,
                        hardware, progress) -> Dict:
    from .lut import COMPRESSED, compressed_document, normalized_options

    if backend != "onnxruntime-cpu":
        raise HwnasError(f"--dimensions: a compressed lookup table is timed on onnxruntime-cpu (int8 units run "
                         f"as onnxruntime QDQ models), not {backend}; allowed: --backend onnxruntime-cpu")
    if not dimensions:
        raise HwnasError("--dimensions: name at least one compression dimension; allowed: pruning, quantization")
    from hwnas.dimensions import JointSpace

    try:
        options = normalized_options(list(dimensions), dimensions)
        JointSpace(dspace.supernet, ["architecture", *options], options)  # the supernet can do them
    except ValueError as err:  # pydantic: a choice out of range
        raise HwnasError(f"--dimensions: {str(err).splitlines()[-1].strip()}") from None
    args = (dspace.name, backend, runner_settings, options)
    result = (_run_on_ray(resource, *args, job=measure_compressed_job) if resource
              else measure_compressed_job(*args, progress))
    if not existing or not fields.get("backend"):
        fields.update(settings, backend=backend)
    fields["ray_resource"] = resource
    fields.setdefault("kind", KIND_OF_BACKEND.get(backend, "other"))
    if hardware or not fields.get("hardware"):
        fields["hardware"] = hardware or result["hardware"]
    fields.setdefault("source", f"measured with hwnas devices measure ({backend}) on host {result['host']}")
    fields.setdefault("host", result["host"])
    fields["labels"] = [label for label in fields.get("labels", []) if label != "shipped"]
    fields["spaces"] = {**fields.get("spaces", {}), dspace.slug: dspace.name}
    document = compressed_document(dspace, options, result["entries"], result["samples"],
                                   {"name": backend, "host": result["host"], **runner_settings})
    profile = save_device(DeviceSpec(**{k: v for k, v in fields.items() if v is not None}),
                          {f"{COMPRESSED}-{dspace.slug}.json": document}, home, base=existing)
    rows = result["samples"]
    return {"profile": profile, "entries": len(result["entries"]), "samples": len(rows),
            "noise_entries": float(np.median([e["iqr_ms"] / e["latency_ms"] for e in result["entries"].values()])),
            "noise_samples": float(np.median([r["iqr_ms"] / r["median_ms"] for r in rows])),
            "host": result["host"], "node": result["node"], "settings": settings, "dimensions": options}


# --------------------------------------------------------------------------- re-anchoring
def reanchor_obstacle(model) -> Optional[str]:
    """Why ``model``'s references cannot be re-timed here (None: they can).

    Possible for a supernet cost model whose profile a local backend measured on this host
    (not through a Ray node) and whose samples hold the space's reference sub-networks.
    """
    from .predictors import CompressedCostModel, SupernetCostModel

    spec = model.profile.spec
    obstacle = profile_obstacle(spec)
    if obstacle is not None:
        return obstacle
    if isinstance(model, CompressedCostModel):
        host = model.document["backend"].get("host")
        if host != socket.gethostname():
            return f"profile {spec.name!r}'s compressed table was measured on host {host or 'unknown'!r}, not this one"
        return None if len(model.configs) >= 10 else f"profile {spec.name!r}'s compressed table has no references"
    if not isinstance(model, SupernetCostModel) or model.samples is None:
        return "only latency predicted from a supernet lookup table measured by 'hwnas devices measure' can be re-anchored"
    if not set(model.dspace.reference_archs()) <= set(model.samples.archs):
        return f"profile {spec.name!r} holds no timings of the space's reference sub-networks"
    return None


def profile_obstacle(spec: DeviceSpec) -> Optional[str]:
    """Why a device's profile was not measured by a backend on this machine (None: it was)."""
    if spec.backend not in KIND_OF_BACKEND or spec.ray_resource:
        return f"profile {spec.name!r} was not measured by a backend on this machine"
    if spec.host != socket.gethostname():
        return f"profile {spec.name!r} was measured on host {spec.host or 'unknown'!r}, not on this one"
    return None


def reference_drift(model, settings: dict) -> float:
    """Latency of the reference sub-networks timed now over their timing in the profile (median ratio).

    ``settings``: the backend settings of the run's device block (batch, threads, clock,
    statistic, warm-up); timed interleaved, with the repeats of ``hwnas devices measure``.
    """
    models, then, backend = model.reference_items()
    runner = create_backend(backend, **{**settings, **DEFAULT_TIMING})
    now = [m.latency_ms for m in runner.measure_many([(m, model.dspace.input_shape) for m in models])]
    return float(np.median(np.array(now) / then))
