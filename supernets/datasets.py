"""Image classification data for supernet training and sub-network evaluation.

Two sources, chosen by a spec string (:func:`load_dataset`):

- ``"fmnist-mini"``: a class-balanced Fashion-MNIST subset shipped inside the package
  (``checkpoints/fmnist_mini.npz``, built by ``scripts/make_default_data.py``), so the
  default path never needs a download or a shared folder.
- ``"fashion-mnist:PATH"`` / ``"mnist:PATH"``: a local folder of the original IDX files
  (``.gz`` or raw). Train = first 55000 training images, val = last 5000, test = t10k.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from hwnas.errors import HwnasError

EMBEDDED_DATA = Path(__file__).resolve().parent / "checkpoints" / "fmnist_mini.npz"
SPEC_HELP = "'fmnist-mini' (embedded), 'fashion-mnist:PATH' or 'mnist:PATH' (a folder of IDX files)"

# Per-dataset pixel mean/std on the official training sets (pixels scaled to [0, 1]).
NORMALISATION = {"fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081)}
VAL_SIZE = 5000  # the IDX loaders hold out the last 5000 training images as val

# IDX type codes -> numpy big-endian dtypes (the format's own table).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

Split = Tuple[torch.Tensor, torch.Tensor]  # (X float32 N x C x H x W, y int64 N)


@dataclass
class DatasetSplits:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return tuple(self.train[0].shape[1:])

    def split(self, which: str) -> Split:
        if which not in ("train", "val", "test"):
            raise HwnasError(f"unknown data split {which!r}; allowed: train, val, test")
        return getattr(self, which)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise HwnasError(f"cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise HwnasError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise HwnasError(f"{path}: header says shape {shape} ({expected} bytes) but holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise HwnasError(f"{folder} has no {stem} or {stem}.gz (expected the original IDX file names)")


def read_idx_folder(folder: Path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """The official ``train`` and ``t10k`` (images uint8 N x 28 x 28, labels int64) of an MNIST-style folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HwnasError(f"data folder {folder} does not exist; expected a folder of MNIST-style IDX files")
    out = {}
    for split in ("train", "t10k"):
        images = read_idx(_find_idx(folder, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(folder, f"{split}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise HwnasError(f"{folder}: {split} images {images.shape} do not match labels {labels.shape}")
        out[split] = (images.astype(np.uint8), labels)
    return out


def to_tensors(images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> Split:
    """uint8 N x H x W images -> normalised float32 N x 1 x H x W, labels -> int64."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).sub_(mean).div_(std)
    return x.unsqueeze(1), torch.from_numpy(np.asarray(labels, dtype=np.int64))


def _load_embedded() -> DatasetSplits:
    if not EMBEDDED_DATA.is_file():
        raise HwnasError(f"embedded data {EMBEDDED_DATA} is missing; rebuild it with scripts/make_default_data.py")
    mean, std = NORMALISATION["fashion-mnist"]
    try:
        with np.load(EMBEDDED_DATA) as z:
            splits = {s: to_tensors(z[f"{s}_images"], z[f"{s}_labels"], mean, std) for s in ("train", "val", "test")}
    except (OSError, KeyError, ValueError) as err:
        raise HwnasError(f"embedded data {EMBEDDED_DATA} is unreadable: {err}") from None
    return DatasetSplits("fmnist-mini", num_classes=10, **splits)


def read_checked_idx_folder(folder: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """:func:`read_idx_folder` plus what a data set needs on top (enough images for a val split);
    cheap enough (no tensors made) for ``hwnas validate`` to read every file in full."""
    raw = read_idx_folder(Path(folder).expanduser())
    if len(raw["train"][0]) <= VAL_SIZE:
        raise HwnasError(f"{folder}: only {len(raw['train'][0])} training images; need more than {VAL_SIZE} "
                         f"for a val split")
    return raw


def _load_idx_dataset(name: str, folder: str) -> DatasetSplits:
    raw = read_checked_idx_folder(folder)
    mean, std = NORMALISATION[name]
    (x, y), (xt, yt) = raw["train"], raw["t10k"]
    return DatasetSplits(
        name,
        train=to_tensors(x[:-VAL_SIZE], y[:-VAL_SIZE], mean, std),
        val=to_tensors(x[-VAL_SIZE:], y[-VAL_SIZE:], mean, std),
        test=to_tensors(xt, yt, mean, std),
        num_classes=int(max(y.max(), yt.max())) + 1,
    )


def load_dataset(spec: str) -> DatasetSplits:
    """``"fmnist-mini"``, ``"fashion-mnist:PATH"`` or ``"mnist:PATH"`` -> :class:`DatasetSplits`."""
    if not isinstance(spec, str) or not spec.strip():
        raise HwnasError(f"dataset spec {spec!r} is empty; allowed: {SPEC_HELP}")
    if spec == "fmnist-mini":
        return _load_embedded()
    name, sep, folder = spec.partition(":")
    if sep and name in NORMALISATION and folder:
        return _load_idx_dataset(name, folder)
    raise HwnasError(f"unknown dataset spec {spec!r}; allowed: {SPEC_HELP}")
