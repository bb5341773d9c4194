"""ONNX forms of a sub-network: fp32 export and onnxruntime's static QDQ int8 quantization.

The one place torch models become ONNX bytes, shared by the onnxruntime backend (measuring),
compressed candidates (int8 measured on the runtime people deploy with) and ``hwnas export``.
"""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from hwnas.errors import HwnasError

INPUT_NAME, OUTPUT_NAME = "input", "output"
OPSET = 17


def to_onnx(model: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    """``model`` (eval mode) as ONNX bytes, traced on ``example``; exporter failures as one line.

    A model that carries its own deployed form (``deployed_onnx``: a quantized candidate's QDQ
    int8 model, always with a dynamic batch) returns that.
    """
    deployed = getattr(model, "deployed_onnx", None)
    if deployed is not None:
        return deployed(example)
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape checks that are constant for one input shape
            torch.onnx.export(model.eval(), (example,), buffer, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    except Exception as err:  # exporter errors come in many types
        raise HwnasError(f"cannot export the model to ONNX: {err}".splitlines()[0]) from None
    return buffer.getvalue()


def session(onnx_bytes: bytes, threads: int = 1):
    """An onnxruntime CPU session of ``onnx_bytes`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a list of input batches."""

    def __init__(self, batches: Iterable[torch.Tensor]):
        self._it = iter([{INPUT_NAME: b.numpy().astype(np.float32)} for b in batches])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - not used by MinMax calibration
        pass


def quantize_int8(onnx_bytes: bytes, calibration: Sequence[torch.Tensor],
                  nodes_to_exclude: Optional[Sequence[str]] = None,
                  nodes_to_quantize: Optional[Sequence[str]] = None) -> bytes:
    """Static QDQ int8 (per-channel weights, MinMax-calibrated activations) of an fp32 ONNX model.

    ``nodes_to_exclude`` / ``nodes_to_quantize``: ONNX node names, for mixed precision (the
    rest stays fp32). ``calibration``: input batches whose activation ranges set the scales.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if not calibration:
        raise HwnasError("int8 quantization needs calibration images (accuracy_eval.calib_images > 0)")
    with tempfile.TemporaryDirectory(prefix="hwnas-qdq-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # onnxruntime logs advice on the root logger
        try:
            quantize_static(str(src), str(dst), _Batches(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=list(nodes_to_exclude or []) or None,
                            nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize else None)
        except Exception as err:
            raise HwnasError(f"onnxruntime int8 quantization failed: {err}".splitlines()[0]) from None
        finally:
            root.setLevel(level)
        return dst.read_bytes()


def run(onnx_bytes_or_session, x: torch.Tensor) -> np.ndarray:
    """Outputs of an ONNX model (bytes or a session) on ``x``."""
    sess = session(onnx_bytes_or_session) if isinstance(onnx_bytes_or_session, bytes) else onnx_bytes_or_session
    return sess.run(None, {INPUT_NAME: x.numpy().astype(np.float32)})[0]
