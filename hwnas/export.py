"""Export chosen sub-networks of a run folder, parity-checked, with ``model.json`` and ``model_card.md``.

A candidate is rebuilt from the run folder alone — ``config.yaml``, ``results.sqlite`` and the
checkpoint the config names (its sha256 must be the one the run recorded) — through
:func:`hwnas.supernets.materialize` with the run's ``accuracy_eval.calib_images`` and
``strategy.seed``: the function the search measured. Every file written is loaded back
(onnxruntime, ``torch.export.load``, ``torch.jit.load``, :func:`load_model`) and compared with
that PyTorch sub-network on validation images; a failed check fails the export. Everything is
written to a temporary folder beside ``--out`` and renamed into place at the end, so a failure
leaves nothing behind.

Choosing candidates: ``pick`` (a candidate id as the run's CSVs print it, or its architecture
string), ``rank`` (1 = best front member by ``by``, default the first objective, ties broken by
the other objectives in the file's order) or the whole ``front`` (ordered alike).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .config import ExperimentConfig, data_spec, read_yaml
from .errors import HwnasError
from .evaluation import Metric, accuracy_images, experiment_metrics
from .pipeline import CONFIG_NAME, STORE_NAME, front_of, load_run_config
from .store import Candidate, ResultsStore
from .supernets.base import sha256_file

#: format -> file suffix after the stem (``--name``, default ``model``).
FORMATS = {"onnx": ".onnx", "onnx-int8": ".int8.onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt",
           "state_dict": ".state_dict.pt"}
FP32_FORMATS = ("onnx", "pt2", "torchscript", "state_dict")
EXPORT_FORMAT, EXPORT_FORMAT_VERSION = "hwnas-export", 1
# Parity thresholds (issue 19): fp32 files vs the PyTorch sub-network; int8 vs the model searched.
FP32_MAX_ABS_DIFF = 1e-4
FP32_MIN_TOP1 = 0.999
INT8_MIN_TOP1 = 0.99
PARITY_BATCH = 500


# --------------------------------------------------------------------------- the run folder
@dataclass
class RunFolder:
    """A run folder opened read-only: its config, metrics, every stored candidate and its meta."""

    path: Path
    cfg: ExperimentConfig
    metrics: List[Metric]
    candidates: List[Candidate]
    meta: Dict[str, Any]
    sources: Dict[int, Dict[str, str]] = field(default_factory=dict)  # id -> metric -> label in candidates.csv

    def front(self) -> List[Candidate]:
        """The run's front as front.csv holds it (measured members only with ``measure_front``)."""
        return front_of(self.candidates, self.metrics, self.cfg, measured_only=self.cfg.measure_front)

    def metric(self, key: str) -> Metric:
        keys = {m.key: m for m in self.metrics}
        if key not in keys:  # `latency_ms@dev` where the run's single device makes it `latency_ms`
            keys.update({f"{m.metric}@{m.device}": m for m in self.metrics if m.device})
        if key not in keys:
            raise HwnasError(f"--by {key}: not a metric of run {self.path}; allowed: "
                             f"{', '.join(m.key for m in self.metrics)}")
        return keys[key]

    def ranked_front(self, by: Optional[str] = None) -> List[Candidate]:
        """Front members best first by ``by`` (default: the first objective), then the other objectives."""
        objectives = [m for m in self.metrics if m.goal]
        first = self.metric(by) if by else objectives[0]
        order = [first] + [m for m in objectives if m.key != first.key]

        def sort_key(c: Candidate):
            return tuple((c.value(m.key) if m.goal != "max" else -c.value(m.key)) for m in order)

        return sorted(self.front(), key=sort_key)

    def label(self, cand: Candidate, key: str) -> Optional[str]:
        """``measured`` / ``predicted`` / ``estimated`` (as the run's CSVs label it)."""
        return self.sources.get(cand.id, {}).get(key) or cand.source(key)


def open_run(run_dir) -> RunFolder:
    """Read a run folder without changing it; bad folders (a damaged store, one of a newer schema version)
    are one line."""
    run_dir = Path(run_dir)
    raw = read_yaml(run_dir / CONFIG_NAME) if (run_dir / CONFIG_NAME).is_file() else None
    space = raw.get("space") if isinstance(raw, dict) else None
    if isinstance(space, dict) and space.get("table"):  # before validating: the table itself is beside the point
        raise HwnasError(f"{run_dir}: a {space.get('tabular_space', 'table')} table run has no weights to rebuild: its "
                         f"sub-networks are rows of a benchmark table ({space['table']}), not networks")
    cfg = load_run_config(run_dir)
    store = ResultsStore(run_dir / STORE_NAME, readonly=True)  # refuses a store of a newer schema version
    try:
        meta = {k: store.get_meta(k) for k in ("status", "checkpoint_sha256", "wall_time_s")}
        candidates = store.candidates()
    finally:
        store.close()
    return RunFolder(run_dir, cfg, experiment_metrics(cfg), candidates, meta, _csv_sources(run_dir))


def _csv_sources(run_dir: Path) -> Dict[int, Dict[str, str]]:
    """The source labels of candidates.csv (it knows which predicted values are analytical estimates)."""
    import csv

    path = run_dir / "candidates.csv"
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if str(row.get("id", "")).isdigit():
                out[int(row["id"])] = {k[: -len("_source")]: v for k, v in row.items() if k.endswith("_source") and v}
    return out


@dataclass
class Choice:
    candidate: Candidate
    rank: Optional[int]  # on the front by `rank_by`; None when the candidate is not on the front
    rank_by: str


def choose(run: RunFolder, pick: Optional[str] = None, rank: Optional[int] = None, by: Optional[str] = None,
           front: bool = False, describe: Optional[Callable[[Dict], str]] = None,
           parse: Optional[Callable[[str], Dict]] = None) -> List[Choice]:
    """The candidates ``pick`` (id or architecture string), ``rank`` or ``front`` name, with their rank."""
    if sum(x is not None and x is not False for x in (pick, rank, front)) != 1:
        raise HwnasError("choose the sub-networks with exactly one of --pick ID, --rank N or --front")
    ranked = run.ranked_front(by)
    rank_by = run.metric(by).key if by else next(m.key for m in run.metrics if m.goal)
    position = {c.id: i + 1 for i, c in enumerate(ranked)}
    if front:
        if not ranked:
            raise HwnasError(f"{run.path}: the run has no front (no measured candidate meets every budget)")
        return [Choice(c, i + 1, rank_by) for i, c in enumerate(ranked)]
    if rank is not None:
        if not 1 <= rank <= len(ranked):
            raise HwnasError(f"--rank {rank}: the front of {run.path} has {len(ranked)} member(s); "
                             f"allowed: 1..{len(ranked)}" if ranked else f"--rank {rank}: the run has no front")
        return [Choice(ranked[rank - 1], rank, rank_by)]
    text = str(pick).strip()
    if text.isdigit():
        cand = next((c for c in run.candidates if c.id == int(text)), None)
        if cand is None:
            ids = [c.id for c in run.candidates]
            raise HwnasError(f"--pick {text}: no candidate {text} in {run.path} (ids {min(ids)}..{max(ids)}; "
                             f"see its candidates.csv)" if ids else f"--pick {text}: {run.path} has no candidates")
        return [Choice(cand, position.get(cand.id), rank_by)]
    if describe is None:
        raise HwnasError(f"--pick {text!r}: give a candidate id (a number, the 'id' column of the run's CSVs)")
    wanted = {text}
    if parse is not None:
        try:
            wanted.add(describe(parse(text)))
        except HwnasError:
            pass
    cand = next((c for c in run.candidates if describe(c.config) in wanted), None)
    if cand is None:
        raise HwnasError(f"--pick {text!r}: neither a candidate id nor the architecture of a candidate of "
                         f"{run.path} (hwnas supernet eval CHECKPOINT --configs ARCH evaluates any architecture)")
    return [Choice(cand, position.get(cand.id), rank_by)]


# --------------------------------------------------------------------------- rebuilding candidates
class Rebuilder:
    """Rebuilds candidates of a supernet run as searched (the checkpoint and the data loaded once)."""

    def __init__(self, run: RunFolder):
        from hwnas.supernets import checkpoint_path, checkpoint_sha256, load_checkpoint
        from hwnas.supernets.datasets import load_dataset

        cfg = run.cfg
        self.run, self.cfg = run, cfg
        self.checkpoint_file = checkpoint_path(cfg.space.checkpoint)
        self.sha256 = checkpoint_sha256(cfg.space.checkpoint)
        self.sha256_recorded = run.meta.get("checkpoint_sha256")
        if self.sha256_recorded is not None and self.sha256_recorded != self.sha256:
            raise HwnasError(f"{run.path}: the run was searched on checkpoint sha256 {self.sha256_recorded[:16]}..., "
                             f"but {self.checkpoint_file} (space.checkpoint: {cfg.space.checkpoint}) has "
                             f"{self.sha256[:16]}...; these are not the weights searched (restore that checkpoint)")
        self.supernet = load_checkpoint(self.checkpoint_file)
        self.data = load_dataset(data_spec(cfg))

    def model(self, config: Dict) -> torch.nn.Module:
        """The sub-network exactly as the search measured it (``materialize``, the run's calibration and seed)."""
        from hwnas.supernets import materialize

        e = self.cfg.accuracy_eval
        return materialize(self.supernet, config, self.data.train[0], e.calib_images, self.cfg.strategy.seed).eval()

    def describe(self, config: Dict) -> str:
        return self.supernet.describe(config)

    def searched_images(self):
        """The images and labels the run measured accuracy on."""
        e = self.cfg.accuracy_eval
        return accuracy_images(self.data, e.split, e.images, self.cfg.strategy.seed)

    def choose(self, **selection) -> List[Choice]:
        return choose(self.run, describe=self.describe, parse=self.supernet.parse, **selection)


def _logits(fn: Callable[[torch.Tensor], Any], X: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([np.asarray(fn(X[i:i + PARITY_BATCH]), dtype=np.float32)
                               for i in range(0, len(X), PARITY_BATCH)])


def _torch_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
    return lambda x: model(x).numpy()


def accuracy(fn: Callable[[torch.Tensor], Any], X: torch.Tensor, y: torch.Tensor) -> float:
    return float((_logits(fn, X).argmax(1) == y.numpy()).mean()) if len(y) else float("nan")


# --------------------------------------------------------------------------- formats
@contextlib.contextmanager
def _quiet():
    """Exporters' and TorchScript's deprecation and tracer notes are not the user's business here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _write(fmt: str, model: torch.nn.Module, path: Path, example: torch.Tensor, calibration, cache: Dict) -> None:
    from hwnas.devices.onnx import quantize_int8, to_onnx

    with _quiet():
        if fmt in ("onnx", "onnx-int8"):
            if "onnx" not in cache:
                cache["onnx"] = to_onnx(model, example[:1].clone(), dynamic_batch=True)
            data = cache["onnx"]
            if fmt == "onnx-int8":
                # An fp32 candidate is quantized whole (per-channel weights, activations calibrated on the
                # run's calibration images): post-training int8, reported against the searched fp32 model.
                data = cache.get("onnx-int8") or quantize_int8(data, calibration)
            path.write_bytes(data)
        elif fmt == "pt2":
            # Traced on a batch of 2: a batch of 1 would let torch.export specialise the batch size.
            batch = torch.export.Dim("batch", min=1, max=65536)
            try:
                program = torch.export.export(model, (example[:2].clone(),), dynamic_shapes=({0: batch},))
            except Exception as err:
                raise HwnasError(f"torch.export cannot export the sub-network: {err}".splitlines()[0]) from None
            torch.export.save(program, str(path))
        elif fmt == "torchscript":
            try:
                traced = torch.jit.trace(model, example[:1].clone())
            except Exception as err:
                raise HwnasError(f"TorchScript cannot trace the sub-network: {err}".splitlines()[0]) from None
            torch.jit.save(traced, str(path))
        elif fmt == "state_dict":
            torch.save(model.state_dict(), path)


def _loaded(fmt: str, path: Path, folder: Path, threads: int) -> Callable[[torch.Tensor], np.ndarray]:
    """The written file loaded back by its own runtime, as a function of a batch."""
    with _quiet():
        if fmt in ("onnx", "onnx-int8"):
            from hwnas.devices.onnx import run, session

            sess = session(path, threads)
            return lambda x: run(sess, x)
        if fmt == "pt2":
            module = torch.export.load(str(path)).module()
            return lambda x: module(x).numpy()
        if fmt == "torchscript":
            module = torch.jit.load(str(path))
            return lambda x: module(x).numpy()
        return _torch_fn(load_model(folder))  # state_dict: what hwnas.load gives


def _parity(fmt: str, logits: np.ndarray, reference: np.ndarray, labels: np.ndarray, int8_required: bool) -> Dict:
    top1 = float((logits.argmax(1) == reference.argmax(1)).mean())
    out = {"images": int(len(labels)), "max_abs_diff": float(np.abs(logits - reference).max()),
           "top1_agreement": top1, "accuracy": float((logits.argmax(1) == labels).mean()),
           "reference_accuracy": float((reference.argmax(1) == labels).mean())}
    if fmt == "onnx-int8":
        out.update(min_top1_agreement=INT8_MIN_TOP1, reference="the fp32 PyTorch sub-network searched")
        # Whole-model post-training int8 of an fp32 candidate (also one of a run that searched quantization
        # and kept it fp32) was not searched: its agreement is reported, not required; the bar holds for a
        # candidate searched with int8 units (the file is the QDQ graph the run measured).
        out["required"] = int8_required
        out["passed"] = top1 >= INT8_MIN_TOP1
    else:
        out.update(max_abs_diff_allowed=FP32_MAX_ABS_DIFF, min_top1_agreement=FP32_MIN_TOP1, required=True,
                   reference="the PyTorch sub-network")
        out["passed"] = out["max_abs_diff"] <= FP32_MAX_ABS_DIFF and top1 >= FP32_MIN_TOP1
    return out


# --------------------------------------------------------------------------- output folders
def parse_formats(spec: str) -> List[str]:
    formats = [f.strip() for f in str(spec).split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise HwnasError(f"--format {spec}: {'unknown format ' + repr(unknown[0]) if unknown else 'empty'}; "
                         f"allowed: {', '.join(FORMATS)} (comma-separated)")
    return list(dict.fromkeys(formats))


def _check_out(out: Path, run_dir: Path, force: bool, stem: str, formats: Sequence[str]) -> None:
    if out.exists() and not out.is_dir():
        raise HwnasError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise HwnasError(f"--out {out}: folder exists and is not empty; choose another or add --force to replace it")
    if force and out.exists() and (out.resolve() == run_dir.resolve() or out.resolve() in run_dir.resolve().parents):
        raise HwnasError(f"--out {out}: holds the run folder {run_dir}; --force would delete it")
    for name in [stem + FORMATS[f] for f in formats] + ["model.json", "model_card.md"]:
        target = (out / name).resolve()
        if target.parent != out.resolve():
            raise HwnasError(f"--name {stem}: the output path {out / name} escapes the output folder {out}; "
                             f"give a plain file name")


class _Staging:
    """A temporary folder beside ``out``, renamed onto it on success and removed on any failure."""

    def __init__(self, out: Path):
        self.out = out
        self.created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()

    def commit(self) -> None:
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.replace(self.out, old)  # --force, or an empty folder
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        for folder in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:
                pass


# --------------------------------------------------------------------------- export
@dataclass
class Exported:
    folder: Path  # final location
    info: Dict  # model.json


def export(run_dir, out, formats: Sequence[str] = ("onnx",), pick: Optional[str] = None, rank: Optional[int] = None,
           by: Optional[str] = None, front: bool = False, force: bool = False, name: str = "model",
           parity_images: int = 2000, measure: bool = False, device: Optional[str] = None,
           evaluate: bool = False, threads: int = 1, log: Callable[[str], None] = lambda s: None) -> List[Exported]:
    """Export the chosen candidates of ``run_dir`` into ``out`` (``pick``/``rank``: the files in ``out``;
    ``front``: one folder ``candidate-<id>`` per member). Returns what was written (after the rename into place)."""
    run_dir, out = Path(run_dir), Path(out)
    if parity_images < 0:
        raise HwnasError(f"--parity-images {parity_images}: give a number of images >= 0 (0: the whole val split)")
    if device is not None and not measure:
        raise HwnasError(f"--device {device}: only used with --measure (which times the files on it)")
    formats = parse_formats(",".join(formats) if not isinstance(formats, str) else formats)
    run = open_run(run_dir)
    _check_out(out, run_dir, force, name, formats)
    rebuilder = Rebuilder(run)
    choices = rebuilder.choose(pick=pick, rank=rank, by=by, front=front)
    device_cfg = _measuring_device(run, device) if measure else None
    staging = _Staging(out)
    results = []
    try:
        for choice in choices:
            sub = f"candidate-{choice.candidate.id}" if front else ""
            folder = staging.tmp / sub if sub else staging.tmp
            folder.mkdir(exist_ok=True)
            if front:  # several candidates take a while: say where it is
                log(f"front member {choice.rank} of {len(choices)}: candidate {choice.candidate.id}")
            info = _export_one(rebuilder, choice, folder, formats, name, parity_images, device_cfg, evaluate,
                               threads)
            results.append(Exported(out / sub if sub else out, info))
        staging.commit()
    except BaseException:
        staging.abort()
        raise
    return results


def _measuring_device(run: RunFolder, device: Optional[str]):
    """The run's device whose settings ``--measure`` times the files with; it must be this machine's CPU."""
    from hwnas.devices.location import locate

    names = [d.name for d in run.cfg.devices]
    dcfg = run.cfg.devices[0] if device is None else next((d for d in run.cfg.devices if d.name == device), None)
    if dcfg is None:
        raise HwnasError(f"--device {device}: not a device of run {run.path}; allowed: {', '.join(names)}")
    where = locate(dcfg.name, dcfg.backend)
    backend = where.profile.spec.backend if where.profile is not None else dcfg.backend
    if not where.here or where.ray_resource or backend not in ("torch-cpu", "onnxruntime-cpu"):
        raise HwnasError(f"--device {dcfg.name}: measured on {where.where if where.here else 'no machine here'}; "
                         f"--measure times the files on this machine's CPU only (a device with backend torch-cpu "
                         f"or onnxruntime-cpu)")
    return dcfg


def _export_one(rb: Rebuilder, choice: Choice, folder: Path, formats: Sequence[str], stem: str,
                parity_images: int, device_cfg, evaluate: bool, threads: int) -> Dict:
    from hwnas.supernets import calibration_batches

    from hwnas.dimensions.quantization import QuantizedModel

    cfg, cand = rb.cfg, choice.candidate
    searched = rb.model(cand.config)
    # A candidate searched with int8 units runs as onnxruntime QDQ: that graph is its onnx-int8 file, and
    # the other formats hold its fp32 layers (pruned, BN recalibrated) the QDQ model was made from.
    model = searched.model if isinstance(searched, QuantizedModel) else searched
    X_val, y_val = rb.data.val
    n = parity_images if 0 < parity_images < len(y_val) else len(y_val)
    X_val, y_val = X_val[:n], y_val[:n]  # a tensor (data sets from disk hold images made float on demand)
    reference = _logits(_torch_fn(model), X_val)
    searched_logits = reference if searched is model else _logits(_torch_fn(searched), X_val)
    X_acc, y_acc = rb.searched_images()
    reproduced = accuracy(_torch_fn(searched), X_acc, y_acc)
    calibration = calibration_batches(rb.data.train[0], cfg.accuracy_eval.calib_images, cfg.strategy.seed)
    files, cache = {}, {}
    written = list(dict.fromkeys(list(formats) + ["state_dict"]))  # hwnas.load reads the state dict
    for fmt in written:
        path = folder / (stem + FORMATS[fmt])
        start = time.perf_counter()
        if fmt == "onnx-int8" and searched is not model:
            cache["onnx-int8"] = searched.deployed_onnx()  # exactly the graph the run measured
        _write(fmt, model, path, X_val, calibration, cache)
        files[fmt] = {"file": path.name, "bytes": path.stat().st_size, "export_seconds": time.perf_counter() - start,
                      "sha256": sha256_file(path), "requested": fmt in formats}
    info = _model_info(rb, choice, model, files, reproduced, len(y_acc))
    if searched is not model:
        info["int8_units"] = list(searched.int8_paths)
        info["note"] = ("searched with int8 units (onnxruntime QDQ): model.int8.onnx is the searched model; the other "
                        "files hold its fp32 layers before quantization")
    _write_json(folder / "model.json", info)
    parity, outputs = {}, {}
    for fmt in written:
        start = time.perf_counter()
        outputs[fmt] = _logits(_loaded(fmt, folder / files[fmt]["file"], folder, threads), X_val)
        parity[fmt] = _parity(fmt, outputs[fmt], searched_logits if fmt == "onnx-int8" else reference,
                              y_val.numpy(), int8_required=searched is not model)
        parity[fmt]["check_seconds"] = time.perf_counter() - start
    if searched is not model and "onnx-int8" in parity:
        parity["onnx-int8"]["reference"] = "the searched model (its onnxruntime QDQ graph)"
    fp32 = [f for f in written if f in FP32_FORMATS]
    cross = {f"{a} vs {b}": float(np.abs(outputs[a] - outputs[b]).max())
             for i, a in enumerate(fp32) for b in fp32[i + 1:]}
    info["parity"] = {"images": int(len(y_val)), "split": "val", "formats": parity, "between_files": cross}
    failed = [f for f in written if parity[f]["required"] and not parity[f]["passed"]]
    failed += [pair for pair, diff in cross.items() if diff > FP32_MAX_ABS_DIFF]
    if failed:
        what = failed[0]
        p = parity.get(what)
        if p is None:
            detail = f"max |diff| {cross[what]:.3g} (allowed {FP32_MAX_ABS_DIFF:g})"
        elif what == "onnx-int8":
            detail = f"top-1 agreement {p['top1_agreement'] * 100:.2f} % (required {INT8_MIN_TOP1 * 100:g} %)"
        else:
            detail = (f"max |diff| {p['max_abs_diff']:.3g} (allowed {FP32_MAX_ABS_DIFF:g}), top-1 agreement "
                      f"{p['top1_agreement'] * 100:.2f} % (required {FP32_MIN_TOP1 * 100:g} %)")
        raise HwnasError(f"parity check failed for candidate {cand.id}: {what}: {detail} on {len(y_val)} val "
                         f"images; nothing was written")
    if device_cfg is not None:
        measured = _measure_files(folder, files, device_cfg, info["input"]["shape"])
        _compare_with_run(measured, info, device_cfg, int8=searched is not model)
        info["measured_at_export"] = measured
    if evaluate:
        X_test, y_test = rb.data.test
        info["test_accuracy"] = {"images": int(len(y_test)), "torch": accuracy(_torch_fn(model), X_test, y_test),
                                 **{fmt: accuracy(_loaded(fmt, folder / files[fmt]["file"], folder, threads),
                                                  X_test, y_test) for fmt in written}}
    _write_json(folder / "model.json", info)
    (folder / "model_card.md").write_text(model_card(info))
    return info


MIN_EXPORT_REPEATS = 30  # timed runs per file, 3 per round


def _measure_files(folder: Path, files: Dict, dcfg, input_shape) -> Dict:
    """Each written file timed by its runtime with the device's settings (batch, threads, clock, statistic),
    all of them interleaved round by round so that a shared machine's slow spells hit them alike."""
    from hwnas.devices.backends import CLOCKS, time_interleaved

    x = torch.randn(dcfg.batch_size, *input_shape, generator=torch.Generator().manual_seed(0))
    out = {"device": dcfg.name, "batch_size": dcfg.batch_size, "threads": dcfg.threads, "clock": dcfg.clock,
           "statistic": dcfg.statistic, "files": {}}
    previous = torch.get_num_threads()
    torch.set_num_threads(dcfg.threads)
    try:
        runs = [_loaded(fmt, folder / f["file"], folder, dcfg.threads) for fmt, f in files.items()]
        calls = [lambda run=run: run(x) for run in runs]
        # At least MIN_EXPORT_REPEATS timed runs: one file is timed once, so its minimum must outlast a slow spell
        # of a shared machine (a member whose every format came out 1.5-2x slow, benchmarks/export.py).
        timing = dict(warmup=dcfg.warmup, repeats=max(dcfg.repeats, MIN_EXPORT_REPEATS), clock=CLOCKS[dcfg.clock],
                      statistic=dcfg.statistic)
        with torch.inference_mode():
            # A first pass, discarded: fresh sessions (and the first timings of a fresh process) come out
            # slow, 1.76x the run's figure for the first member exported in benchmarks/export.py.
            time_interleaved(calls, **{**timing, "repeats": dcfg.repeats})
            timed = time_interleaved(calls, **timing)
    finally:
        torch.set_num_threads(previous)
    for fmt, m in zip(files, timed):
        out["files"][fmt] = {"latency_ms": m.latency_ms, "median_ms": m.median_ms, "iqr_ms": m.iqr_ms,
                             "repeats": m.repeats, "runtime": "onnxruntime" if fmt.startswith("onnx") else "torch"}
    return out


def _compare_with_run(measured: Dict, info: Dict, dcfg, int8: bool) -> None:
    """Beside the timings: which file is the model the run measured (what its backend ran) and its latency
    now over the run's figure - the check that what ships is as fast as what was searched."""
    searched = {"onnxruntime-cpu": "onnx-int8" if int8 else "onnx", "torch-cpu": "state_dict"}.get(dcfg.backend)
    run = info["values"].get("latency_ms", info["values"].get(f"latency_ms@{dcfg.name}", {})).get("measured")
    if searched not in measured["files"] or run is None:
        return
    measured["searched_format"] = searched
    measured["run_latency_ms"] = run
    measured["ratio_to_run"] = measured["files"][searched]["latency_ms"] / run


def _write_json(path: Path, info: Dict) -> None:
    path.write_text(json.dumps(info, indent=2, default=str) + "\n")


def _model_info(rb: Rebuilder, choice: Choice, model: torch.nn.Module, files: Dict, reproduced: float,
                reproduced_images: int) -> Dict:
    import onnxruntime

    import hwnas
    from hwnas.modelstats import count_flops, count_params

    run, cfg, cand = rb.run, rb.cfg, choice.candidate
    shape = list(rb.data.input_shape)
    values = {}
    for m in run.metrics:
        entry = {"goal": m.goal, "device": m.device, "label": run.label(cand, m.key)}
        if m.key in cand.measured:
            entry["measured"] = cand.measured[m.key]
        if m.key in cand.predicted:
            entry["predicted"] = cand.predicted[m.key]
        values[m.key] = entry
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "hwnas_version": hwnas.__version__,
        "torch_version": str(torch.__version__), "onnxruntime_version": onnxruntime.__version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "candidate": {"id": cand.id, "arch": rb.describe(cand.config), "config": cand.config, "key": cand.key,
                      "generation": cand.generation, "on_front": choice.rank is not None, "rank": choice.rank,
                      "rank_by": choice.rank_by},
        "space": {"supernet": rb.supernet.registry_name, "init_kwargs": rb.supernet.init_kwargs,
                  "checkpoint": cfg.space.checkpoint, "checkpoint_file": str(rb.checkpoint_file),
                  "checkpoint_sha256": rb.sha256, "checkpoint_sha256_recorded_by_run": rb.sha256_recorded is not None,
                  "dimensions": list(cfg.space.dimensions)},
        "run": {"path": str(run.path.resolve()), "name": cfg.name, "status": run.meta.get("status"),
                "data": data_spec(cfg), "strategy": cfg.strategy.model_dump(), "accuracy_eval": cfg.accuracy_eval.model_dump(),
                "objectives": {k: o.model_dump(exclude_none=True) for k, o in cfg.objectives.items()},
                "budgets": [b.text for b in cfg.budgets],
                "devices": [d.model_dump(include={"name", "backend", "batch_size", "threads", "clock", "statistic"})
                            for d in cfg.devices],
                "n_candidates": len(run.candidates)},
        "rebuild": {"how": "supernets.materialize: extract, then BatchNorm recalibrated on a seeded subset of the "
                           "training split", "calib_images": cfg.accuracy_eval.calib_images, "seed": cfg.strategy.seed},
        "input": {"name": "input", "shape": shape, "dtype": "float32", "batch": "dynamic"},
        "output": {"name": "output", "shape": ["batch", int(rb.supernet.init_kwargs.get("num_classes", 10))],
                   "kind": "logits"},
        "preprocessing": _preprocessing(rb.data),
        "params": count_params(model), "flops": count_flops(model, shape),
        "values": values,
        "reproduced": {"accuracy": reproduced, "images": reproduced_images, "split": cfg.accuracy_eval.split,
                       "searched": cand.measured.get("accuracy")},
        "files": files,
    }


def _preprocessing(data) -> Dict:
    """What a deployment does to a raw image before calling the file (the run's data block decides it)."""
    from hwnas.supernets.datasets import CLASSES

    prep = data.preprocessing  # every loader records it
    steps = "pixels / 255" + (f", resized to {prep.size} x {prep.size} (bilinear, antialiased)" if prep.size else "") \
        + ", then (x - mean) / std per channel"
    return {**prep.as_dict(), "layout": f"NCHW float32, {prep.channels} channel(s)", "steps": steps,
            "classes": list(data.classes) or list(CLASSES.get(data.name, ()))}


# --------------------------------------------------------------------------- model card
def _f(v, digits: int = 4) -> str:
    return "–" if v is None else (f"{v:.{digits}g}" if isinstance(v, float) else str(v))


def model_card(info: Dict) -> str:
    c, s, r, rb = info["candidate"], info["space"], info["run"], info["rebuild"]
    pre, parity = info["preprocessing"], info["parity"]
    lines = [f"# Sub-network {c['id']} of run `{r['name']}`", "", f"`{c['arch']}`", "",
             "## What it is", "",
             f"- an image classifier cut from the `{s['supernet']}` supernet (checkpoint `{s['checkpoint']}`, "
             f"sha256 `{s['checkpoint_sha256']}`); searched dimensions: {', '.join(s['dimensions'])}",
             f"- input `{info['input']['name']}`: float32, shape [batch, {', '.join(map(str, info['input']['shape']))}]"
             f" ({pre['layout']}): {pre['steps']}, mean {pre['mean']}, std {pre['std']}",
             f"- output `{info['output']['name']}`: logits over {info['output']['shape'][1]} classes"
             + (f" ({', '.join(pre['classes'])})" if pre["classes"] else ""),
             f"- {info['params']:,} parameters, {info['flops'] / 1e6:.2f} MFLOPs per image",
             "", "## How it was found", "",
             f"- run `{r['path']}` ({r['status'] or 'status unknown'}): {r['strategy']['name']}, population "
             f"{r['strategy']['population']}, {r['strategy']['generations']} generations, seed {r['strategy']['seed']};"
             f" {r['n_candidates']} candidates; budgets: {', '.join(r['budgets']) or 'none'}",
             f"- found in generation {c['generation']} (0 = initial samples, -1 = front re-measurement); "
             + (f"rank {c['rank']} on the run's front by {c['rank_by']}" if c["on_front"] else "not on the run's front"),
             f"- rebuilt as searched: {rb['how']} ({rb['calib_images']} images, seed {rb['seed']})"]
    if not s["checkpoint_sha256_recorded_by_run"]:
        lines.append("- **warning**: the run did not record its checkpoint's sha256 (made before hwnas recorded it); "
                     "the checkpoint was taken as it is now, unverified")
    if r["status"] != "finished":
        lines.append(f"- **warning**: the run's status is `{r['status']}`: it did not finish, its front may change")
    lines += ["", "## Figures from the run", "", "| metric | value | source | device |", "|---|---|---|---|"]
    for key, v in info["values"].items():
        for source in ("measured", "predicted"):
            if source in v:
                label = v["label"] if source == "predicted" and v["label"] == "estimated" else source
                lines.append(f"| {key} | {_f(v[source])} | {label} | {v['device'] or '–'} |")
    dev = {d["name"]: d for d in r["devices"]}
    lines.append("")
    lines.append("Devices: " + "; ".join(f"{d['name']} ({d['backend']}, batch {d['batch_size']}, "
                                         f"{d['threads']} thread(s), {d['statistic']} of runs)" for d in dev.values()))
    rep = info["reproduced"]
    if rep["searched"] is not None:
        same = abs(rep["accuracy"] - rep["searched"]) < 0.5 / max(rep["images"], 1)
        lines += ["", f"Re-measured at export on the run's {rep['images']} `{rep['split']}` images: accuracy "
                      f"{rep['accuracy']:.4f} ({'the same as' if same else '**differs from**'} the run's "
                      f"{rep['searched']:.4f})."]
    lines += ["", "## Files and parity", "",
              f"Each file loaded back by its runtime and compared with the PyTorch sub-network on {parity['images']} "
              f"`{parity['split']}` images (fp32: max |diff| of logits <= {FP32_MAX_ABS_DIFF:g} and identical top-1 "
              f"on >= {FP32_MIN_TOP1 * 100:.1f} %; int8: top-1 agreement >= {INT8_MIN_TOP1 * 100:.0f} %).", "",
              "| file | bytes | export s | max abs diff | top-1 agreement | accuracy (val) | check |",
              "|---|---|---|---|---|---|---|"]
    for fmt, f in info["files"].items():
        p = parity["formats"][fmt]
        check = "pass" if p["passed"] else ("FAIL" if p["required"] else "below the bar (not required)")
        lines.append(f"| `{f['file']}` ({fmt}) | {f['bytes']:,} | {f['export_seconds']:.2f} | {p['max_abs_diff']:.2e} | "
                     f"{p['top1_agreement'] * 100:.2f} % | {p['accuracy']:.4f} | {check} |")
    if parity["between_files"]:
        lines += ["", "Between the fp32 files: " + ", ".join(f"{k} max |diff| {v:.2e}"
                                                             for k, v in parity["between_files"].items()) + "."]
    if "torchscript" in info["files"]:
        lines += ["", f"TorchScript (`torch.jit.trace`) is deprecated as of torch {info['torch_version']} (its "
                      "functions warn); the pt2 file (`torch.export`) is its successor."]
    if "onnx-int8" in info["files"]:
        p = parity["formats"]["onnx-int8"]
        lines += ["", f"int8: onnxruntime static QDQ (per-channel int8 weights, uint8 activations calibrated on "
                      f"{rb['calib_images']} training images), whole model. Its val accuracy {p['accuracy']:.4f} vs "
                      f"{p['reference_accuracy']:.4f} in fp32; "
                      + ("the run searched quantization, so the agreement is required."
                         if p["required"] else "this candidate was searched in fp32, so int8 is a post-training "
                                               "change the search never saw: the agreement is reported, not required.")]
    if "measured_at_export" in info:
        m = info["measured_at_export"]
        run_latency = info["values"].get("latency_ms", info["values"].get(f"latency_ms@{m['device']}", {}))
        lines += ["", "## Measured at export", "",
                  f"On this machine as device `{m['device']}` times it (batch {m['batch_size']}, {m['threads']} "
                  f"thread(s), {m['clock']} clock, {m['statistic']} of runs):", "",
                  "| file | runtime | latency_ms | median_ms | IQR ms |", "|---|---|---|---|---|"]
        for fmt, t in m["files"].items():
            lines.append(f"| `{info['files'][fmt]['file']}` | {t['runtime']} | {t['latency_ms']:.3f} | "
                         f"{t['median_ms']:.3f} | {t['iqr_ms']:.3f} |")
        if "ratio_to_run" in m:
            lines += ["", f"The run measured {m['run_latency_ms']:.3f} ms with its backend "
                          f"({dev[m['device']]['backend']}), which ran the model `{info['files'][m['searched_format']]['file']}` "
                          f"holds: {m['ratio_to_run']:.2f}x that figure now."]
        elif "measured" in run_latency:
            lines += ["", f"The run measured {run_latency['measured']:.3f} ms with its backend "
                          f"({dev[m['device']]['backend']})."]
    if "test_accuracy" in info:
        t = info["test_accuracy"]
        lines += ["", "## Test accuracy", "", f"On the {t['images']} images of the test split (never used by the "
                                               f"search): PyTorch {t['torch']:.4f}; "
                  + ", ".join(f"{info['files'][k]['file']} {v:.4f}" for k, v in t.items() if k in info["files"]) + "."]
    files = info["files"]
    lines += ["", "## Use", "", "```python"]
    if "onnx" in files:
        lines += ["import onnxruntime as ort  # needs only onnxruntime and numpy",
                  f"sess = ort.InferenceSession('{files['onnx']['file']}')",
                  "logits = sess.run(None, {'input': x})[0]  # x: float32 [batch, "
                  + ", ".join(map(str, info["input"]["shape"])) + "], preprocessed as above", ""]
    if "pt2" in files:
        lines += ["import torch  # needs only torch",
                  f"model = torch.export.load('{files['pt2']['file']}').module()", "logits = model(x)", ""]
    lines += ["import hwnas  # a torch.nn.Module with these weights, for fine-tuning",
              "model = hwnas.load('.')  # the folder holding model.json", "```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading an export
def load_model(folder) -> torch.nn.Module:
    """The exported sub-network of ``folder`` as a ready ``torch.nn.Module`` (eval mode, trainable
    parameters): the architecture rebuilt from ``model.json``, the weights of its state dict file
    (sha256 checked)."""
    from hwnas import supernets
    from hwnas.supernets.base import load_torch_file, structure

    folder = Path(folder)
    path = folder / "model.json"
    if not path.is_file():
        raise HwnasError(f"{folder}: not an hwnas export (no model.json)")
    try:
        info = json.loads(path.read_text())
        if info.get("format") != EXPORT_FORMAT:
            raise ValueError("not an hwnas export")
        version, entry = info.get("format_version"), info["files"]["state_dict"]
        space, config = info["space"], info["candidate"]["config"]
    except (ValueError, KeyError, TypeError) as err:
        raise HwnasError(f"{path}: not an hwnas export's model.json ({err})") from None
    if version != EXPORT_FORMAT_VERSION:
        raise HwnasError(f"{path}: export format version {version}; this hwnas reads version {EXPORT_FORMAT_VERSION}")
    weights = (folder / str(entry["file"])).resolve()
    if weights.parent != folder.resolve():
        raise HwnasError(f"{path}: files.state_dict.file {entry['file']!r} escapes {folder}")
    if not weights.is_file():
        raise HwnasError(f"{path}: its state dict {weights.name} is missing from {folder}")
    if sha256_file(weights) != entry.get("sha256"):
        raise HwnasError(f"{weights}: sha256 differs from the one model.json records (the file changed)")
    skeleton = structure(supernets.create(space["supernet"], **space["init_kwargs"]), config)
    try:
        skeleton.load_state_dict(load_torch_file(weights, "exported state dict"))
    except RuntimeError as err:
        raise HwnasError(f"{weights}: weights do not fit the architecture in model.json: "
                         f"{str(err).strip().splitlines()[0]}") from None
    return skeleton.eval()


load = load_model  # hwnas.load


# --------------------------------------------------------------------------- evaluate
def evaluate(run_dir, split: str = "test", pick: Optional[str] = None, rank: Optional[int] = None,
             by: Optional[str] = None, front: bool = False) -> List[Dict]:
    """Accuracy on ``split`` of the chosen candidates, rebuilt as searched, beside the run's own figure."""
    run = open_run(run_dir)
    rb = Rebuilder(run)
    X, y = rb.data.split(split)
    out = []
    for choice in rb.choose(pick=pick, rank=rank, by=by, front=front):
        cand = choice.candidate
        out.append({"id": cand.id, "arch": rb.describe(cand.config), "rank": choice.rank, "rank_by": choice.rank_by,
                    "split": split, "images": int(len(y)), "accuracy": accuracy(_torch_fn(rb.model(cand.config)), X, y),
                    "run_accuracy": cand.measured.get("accuracy"), "run_split": run.cfg.accuracy_eval.split})
    return out
