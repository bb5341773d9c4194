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
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from hwnas.errors import HwnasError

INPUT_NAME, OUTPUT_NAME = "input", "output"
OPSET = 17


def to_onnx(model: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool = False,
            dynamic_size: bool = False) -> bytes:
    """``model`` (eval mode) as ONNX bytes, traced on ``example``; exporter failures as one line.

    ``dynamic_size``: the image height and width are free too (one session of a lookup-table
    part serves every resolution it runs at, :mod:`hwnas.devices.lut`).

    A model that carries its own deployed form (``deployed_onnx``: a quantized candidate's QDQ
    int8 model, always with a dynamic batch) returns that.
    """
    deployed = getattr(model, "deployed_onnx", None)
    if deployed is not None:
        return deployed(example)
    buffer = io.BytesIO()
    batch = {0: "batch"} if dynamic_batch else {}
    axes = {INPUT_NAME: batch, OUTPUT_NAME: batch} if dynamic_batch else None
    if dynamic_size:
        with torch.no_grad():
            images_out = model.eval()(example).dim() == 4  # a block's output is an image too, a head's is not
        size = {2: "height", 3: "width"}
        axes = {INPUT_NAME: batch | size, OUTPUT_NAME: batch | (size if images_out else {})}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape checks that are constant for one input shape
            torch.onnx.export(model.eval(), (example,), buffer, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    except Exception as err:  # exporter errors come in many types
        raise HwnasError(f"cannot export the model to ONNX: {err}".splitlines()[0]) from None
    return buffer.getvalue()


def session(onnx_model: Union[bytes, str, Path], threads: int = 1):
    """An onnxruntime CPU session of an ONNX model (bytes or a file) with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    model = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        where = "" if isinstance(onnx_model, bytes) else f"{onnx_model}: "
        raise HwnasError(f"{where}onnxruntime cannot load the model: {err}".splitlines()[0]) from None


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a list of input batches."""

    def __init__(self, batches: Iterable[torch.Tensor]):
        self._it = iter([{INPUT_NAME: b.numpy().astype(np.float32)} for b in batches])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - not used by MinMax calibration
        pass


def quantize_int8(onnx_bytes: bytes, calibration: Sequence[torch.Tensor],
                  scopes: Optional[Sequence[str]] = None) -> bytes:
    """Static QDQ int8 (per-channel int8 weights, MinMax-calibrated uint8 activations) of an fp32 ONNX model.

    ``scopes``: ONNX node-name prefixes (module scopes, :func:`hwnas.dimensions.quantization.onnx_scope`)
    of the nodes to quantize, for mixed precision (the rest stays fp32); ``None`` quantizes every node.
    ``calibration``: input batches whose activation ranges set the scales.

    Two settings decide whether int8 is fast in onnxruntime's CPU kernels, measured here (elastic
    ResNet and MobileNetV3, benchmarks/compression.py): the model is pre-processed first
    (onnxruntime's ``quant_pre_process``: shape inference and graph optimisation, so every bias is an
    initializer and Conv/Add can take the fused QLinear kernels), and activations are uint8 (U8S8, the
    x86 kernels' native form; int8 activations left a third of the convolutions in fp32 between
    Quantize/Dequantize pairs). Accuracy of the result is always measured on this model itself.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise HwnasError("int8 quantization needs calibration images (accuracy_eval.calib_images > 0)")
    with tempfile.TemporaryDirectory(prefix="hwnas-qdq-") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # onnxruntime logs advice on the root logger
        try:
            quant_pre_process(str(src), str(pre))
            nodes = None
            if scopes is not None:
                names = [n.name for n in onnx.load(str(pre)).graph.node]
                missing = [s for s in scopes if not any(n.startswith(s) for n in names)]
                if missing:
                    raise RuntimeError(f"no ONNX nodes for int8 modules {missing} (exporter naming changed?)")
                nodes = [n for n in names if n.startswith(tuple(scopes))]
            quantize_static(str(pre), str(dst), _Batches(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_quantize=nodes)
        except RuntimeError:
            raise
        except Exception as err:
            raise HwnasError(f"onnxruntime int8 quantization failed: {err}".splitlines()[0]) from None
        finally:
            root.setLevel(level)
        return dst.read_bytes()


def run(model_or_session, x: torch.Tensor) -> np.ndarray:
    """Outputs of an ONNX model (bytes, a file or a session) on ``x``."""
    sess = session(model_or_session) if isinstance(model_or_session, (bytes, str, Path)) else model_or_session
    return sess.run(None, {INPUT_NAME: x.numpy().astype(np.float32)})[0]
