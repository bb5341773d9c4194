"""Image classification data for supernet training and sub-network evaluation.

Sources, chosen by a spec (:func:`load_dataset`): a string ``KIND`` or ``KIND:PATH``, or a mapping
``{kind, path, size, channels, mean, std, val_fraction, test_fraction, seed}`` (an experiment's
``data`` block):

- ``fmnist-mini``: a class-balanced Fashion-MNIST subset shipped inside the package
  (``checkpoints/fmnist_mini.npz``, built by ``scripts/make_default_data.py``), so the
  default path never needs a download or a shared folder.
- ``fashion-mnist:PATH`` / ``mnist:PATH``: a local folder of the original IDX files
  (``.gz`` or raw). Train = first 55000 training images, val = last 5000, test = t10k.
- ``cifar10:PATH`` / ``cifar100:PATH``: the standard python version (``cifar-10-batches-py``,
  ``cifar-100-python``, or the folder holding it). Val = the last 5000 training images.
- ``image-folder:PATH``: one sub-folder per class (``PATH/train/<class>/*.png``, with ``val/`` and
  ``test/`` beside it, or all classes under ``PATH`` split by a seeded ``val_fraction`` /
  ``test_fraction``); files are found by torchvision's ``ImageFolder`` and decoded on demand.

Images are kept as uint8 (or as files) and become normalised float32 only when indexed
(:class:`LazyImages`), so a large set never sits in memory as floats, and an image folder larger
than memory works: calibration and accuracy read seeded subsets.
"""

from __future__ import annotations

import gzip
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from hwnas.errors import HwnasError

EMBEDDED_DATA = Path(__file__).resolve().parent / "checkpoints" / "fmnist_mini.npz"
SPEC_HELP = ("'fmnist-mini' (embedded), 'fashion-mnist:PATH' / 'mnist:PATH' (IDX files), 'cifar10:PATH' / "
             "'cifar100:PATH' (the python version), 'image-folder:PATH' (a folder per class)")
KINDS = ("fmnist-mini", "fashion-mnist", "mnist", "cifar10", "cifar100", "image-folder")
NEEDS_PATH = ("fashion-mnist", "mnist", "cifar10", "cifar100", "image-folder")
NATURAL_CHANNELS = {"fmnist-mini": 1, "fashion-mnist": 1, "mnist": 1, "cifar10": 3, "cifar100": 3, "image-folder": 3}

# Per-dataset pixel mean/std on the official training sets (pixels scaled to [0, 1]).
NORMALISATION = {"fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081),
                 "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                 "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
                 "image-folder": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
VAL_SIZE = 5000  # the IDX loaders hold out the last 5000 training images as val

# IDX type codes -> numpy big-endian dtypes (the format's own table).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

Split = Tuple[Any, torch.Tensor]  # (images N x C x H x W: a tensor or LazyImages, labels int64 N)


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become the network's input (recorded in a run, used again by an export)."""

    size: Optional[int]  # square side the images are resized to (None: as stored)
    channels: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 N x C x H x W (C = 1 or 3) -> normalised float32 N x channels x size x size."""
        x = x.float().div_(255.0)
        if x.shape[1] != self.channels:
            x = x.mean(1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                                align_corners=False)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()

    def as_dict(self) -> Dict[str, Any]:
        return {"size": self.size, "channels": self.channels, "mean": list(self.mean), "std": list(self.std)}


class LazyImages:
    """Images made float on demand; indexes like a tensor (``len``, ``shape``, ``X[slice]``, ``X[idx]``).

    ``fetch(indices) -> uint8 N x C x H x W``: rows of a uint8 array, or decoded image files (kept
    in a bounded cache, so repeated accuracy measurements on one subset decode it once).
    """

    def __init__(self, n: int, fetch: Callable[[np.ndarray], torch.Tensor], prep: Preprocessing,
                 cache_items: int = 0):
        self._n, self._fetch, self.prep = n, fetch, prep
        self._cache: "OrderedDict[int, torch.Tensor]" = OrderedDict()
        self._cache_items = cache_items
        probe = self[0:1]
        self._shape = torch.Size((n, *probe.shape[1:]))

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> torch.Size:
        return self._shape

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.dim() == 0):
            return self[np.array([int(index)])][0]  # one image, like a tensor's X[i]
        if isinstance(index, slice):
            idx = np.arange(self._n)[index]
        else:
            idx = np.asarray(index.numpy() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -self._n or idx.max() >= self._n):
            raise IndexError(f"image index out of range (0..{self._n - 1})")
        idx = idx % max(self._n, 1)
        if not self._cache_items:
            return self.prep.apply(self._fetch(idx))
        missing = [int(i) for i in dict.fromkeys(idx.tolist()) if int(i) not in self._cache]
        if missing:
            for i, x in zip(missing, self.prep.apply(self._fetch(np.array(missing)))):
                self._cache[i] = x
                if len(self._cache) > self._cache_items:
                    self._cache.popitem(last=False)
        return torch.stack([self._cache[int(i)] for i in idx]) if len(idx) else self.prep.apply(self._fetch(idx))

    def __getstate__(self):  # ship the recipe, not the cache
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state


def array_images(images: np.ndarray, prep: Preprocessing) -> LazyImages:
    """uint8 N x H x W or N x H x W x C (or N x C x H x W) held as is, made float when indexed."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    return LazyImages(len(images), lambda idx: torch.from_numpy(images[idx]), prep)


@dataclass
class DatasetSplits:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    preprocessing: Optional[Preprocessing] = None
    classes: List[str] = field(default_factory=list)

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


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: what to read and how to preprocess it."""

    kind: str
    path: Optional[str] = None
    size: Optional[int] = None
    channels: Optional[int] = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    @property
    def natural(self) -> bool:
        """The images as stored, normalised as the data set's own loader always did."""
        return self.size is None and self.channels in (None, NATURAL_CHANNELS[self.kind]) and self.mean is None

    def preprocessing(self) -> Preprocessing:
        channels = self.channels or NATURAL_CHANNELS[self.kind]
        base = "fashion-mnist" if self.kind == "fmnist-mini" else self.kind
        mean, std = NORMALISATION[base]
        mean, std = (self.mean or mean), (self.std or std)
        mean = tuple(mean) if isinstance(mean, (tuple, list)) else (mean,)
        std = tuple(std) if isinstance(std, (tuple, list)) else (std,)
        if len(mean) != channels:  # a grayscale statistic for RGB (or the reverse): the channels' average
            mean, std = (float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels
        return Preprocessing(self.size, channels, mean, std)


def parse_spec(spec: Union[str, Mapping[str, Any], DataSpec]) -> DataSpec:
    """``"KIND"``, ``"KIND:PATH"`` or a mapping of :class:`DataSpec` fields -> :class:`DataSpec`."""
    if isinstance(spec, DataSpec):
        return spec
    if isinstance(spec, Mapping):
        fields_ = {k: v for k, v in dict(spec).items() if v is not None}
        unknown = sorted(set(fields_) - set(DataSpec.__dataclass_fields__))
        if unknown:
            raise HwnasError(f"data: unknown key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(DataSpec.__dataclass_fields__)}")
        for key in ("mean", "std"):
            if key in fields_:
                fields_[key] = tuple(float(v) for v in fields_[key])
        parsed = DataSpec(**fields_)
    elif isinstance(spec, str) and spec.strip():
        kind, _, path = spec.partition(":")
        parsed = DataSpec(kind, path or None)
    else:
        raise HwnasError(f"dataset spec {spec!r} is empty; allowed: {SPEC_HELP}")
    if parsed.kind not in KINDS:
        raise HwnasError(f"unknown dataset spec {spec!r}; allowed: {SPEC_HELP}")
    if parsed.kind in NEEDS_PATH and not parsed.path:
        raise HwnasError(f"data: {parsed.kind} needs a local folder: '{parsed.kind}:PATH' (got {spec!r}); "
                         f"allowed: {SPEC_HELP}")
    return parsed


# --------------------------------------------------------------------------- loaders
def _load_embedded(spec: DataSpec) -> DatasetSplits:
    if not EMBEDDED_DATA.is_file():
        raise HwnasError(f"embedded data {EMBEDDED_DATA} is missing; rebuild it with scripts/make_default_data.py")
    mean, std = NORMALISATION["fashion-mnist"]
    try:
        with np.load(EMBEDDED_DATA) as z:
            raw = {s: (z[f"{s}_images"], z[f"{s}_labels"]) for s in ("train", "val", "test")}
    except (OSError, KeyError, ValueError) as err:
        raise HwnasError(f"embedded data {EMBEDDED_DATA} is unreadable: {err}") from None
    if spec.natural:  # small: float tensors, exactly as before
        splits = {s: to_tensors(x, y, mean, std) for s, (x, y) in raw.items()}
    else:
        prep = spec.preprocessing()
        splits = {s: (array_images(x, prep), torch.from_numpy(y.astype(np.int64))) for s, (x, y) in raw.items()}
    return DatasetSplits("fmnist-mini", num_classes=10, preprocessing=spec.preprocessing(), **splits)


def _from_arrays(name: str, spec: DataSpec, train, test, num_classes: int) -> DatasetSplits:
    """uint8 train/test arrays -> splits (val = the last 5000 training images), float on demand."""
    (x, y), (xt, yt) = train, test
    if len(x) <= VAL_SIZE:
        raise HwnasError(f"{spec.path}: only {len(x)} training images; need more than {VAL_SIZE} for a val split")
    prep = spec.preprocessing()

    def split(images, labels):
        return array_images(images, prep), torch.from_numpy(np.asarray(labels, dtype=np.int64))

    return DatasetSplits(name, train=split(x[:-VAL_SIZE], y[:-VAL_SIZE]), val=split(x[-VAL_SIZE:], y[-VAL_SIZE:]),
                         test=split(xt, yt), num_classes=num_classes, preprocessing=prep)


def _load_idx_dataset(spec: DataSpec) -> DatasetSplits:
    raw = read_idx_folder(Path(spec.path).expanduser())
    (x, y), (xt, yt) = raw["train"], raw["t10k"]
    if spec.natural:
        mean, std = NORMALISATION[spec.kind]
        if len(x) <= VAL_SIZE:
            raise HwnasError(f"{spec.path}: only {len(x)} training images; need more than {VAL_SIZE} for a val split")
        return DatasetSplits(spec.kind, train=to_tensors(x[:-VAL_SIZE], y[:-VAL_SIZE], mean, std),
                             val=to_tensors(x[-VAL_SIZE:], y[-VAL_SIZE:], mean, std), test=to_tensors(xt, yt, mean, std),
                             num_classes=int(max(y.max(), yt.max())) + 1, preprocessing=spec.preprocessing())
    return _from_arrays(spec.kind, spec, (x, y), (xt, yt), int(max(y.max(), yt.max())) + 1)


def _unpickle(path: Path) -> Dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise HwnasError(f"{path.parent}: no {path.name} (expected the python version of CIFAR)") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise HwnasError(f"{path}: not a CIFAR python batch ({err})") from None


def _load_cifar(spec: DataSpec) -> DatasetSplits:
    folder = Path(spec.path).expanduser()
    inner = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[spec.kind]
    if (folder / inner).is_dir():
        folder = folder / inner
    if not folder.is_dir():
        raise HwnasError(f"data folder {folder} does not exist; expected the python version of {spec.kind}")
    names = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if spec.kind == "cifar10" else (["train"], ["test"])
    label_key = b"labels" if spec.kind == "cifar10" else b"fine_labels"

    def read(files):
        batches = [_unpickle(folder / f) for f in files]
        try:
            x = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
            y = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
        except (KeyError, ValueError) as err:
            raise HwnasError(f"{folder}: a batch lacks data or {label_key.decode()} of the right shape ({err})") \
                from None
        return x, y

    return _from_arrays(spec.kind, spec, read(names[0]), read(names[1]), 10 if spec.kind == "cifar10" else 100)


def _decode_files(paths: Sequence[str], channels: int) -> Callable[[np.ndarray], torch.Tensor]:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"

    def fetch(idx: np.ndarray) -> torch.Tensor:
        images = []
        for i in idx:
            try:
                with Image.open(paths[int(i)]) as im:
                    images.append(np.asarray(im.convert(mode), dtype=np.uint8))
            except OSError as err:
                raise HwnasError(f"cannot read image {paths[int(i)]}: {err}") from None
        shapes = {a.shape for a in images}
        if len(shapes) > 1:
            raise HwnasError(f"images of different sizes {sorted(shapes)[:2]} in one batch; set data.size to resize "
                             "them to one square size")
        stacked = np.stack(images) if images else np.zeros((0, 1, 1), np.uint8)
        stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(stacked))

    return fetch


def _folder_samples(root: Path) -> Tuple[List[str], List[Tuple[str, int]]]:
    from torchvision.datasets.folder import find_classes, make_dataset

    try:
        classes, to_index = find_classes(str(root))
        samples = make_dataset(str(root), to_index, extensions=IMAGE_SUFFIXES)
    except (FileNotFoundError, OSError) as err:
        raise HwnasError(f"image folder {root}: {str(err).splitlines()[0]}; expected one sub-folder of images per "
                         "class") from None
    return classes, samples


# Decoded images kept per split: a search measures accuracy on one subset again and again.
IMAGE_CACHE_ITEMS = 20000


def _load_image_folder(spec: DataSpec) -> DatasetSplits:
    root = Path(spec.path).expanduser()
    if not root.is_dir():
        raise HwnasError(f"image folder {root} does not exist")
    prep = spec.preprocessing()
    if (root / "train").is_dir():
        splits = {s: _folder_samples(root / s) for s in ("train", "val", "test") if (root / s).is_dir()}
        classes = splits["train"][0]
        for s, (cls, _) in splits.items():
            if cls != classes:
                raise HwnasError(f"image folder {root / s}: classes {cls} differ from train's {classes}")
        samples = {s: smp for s, (_, smp) in splits.items()}
        missing = [s for s in ("val", "test") if s not in samples]
        if missing:  # carve what is missing out of train, seeded
            samples.update(_seeded_split(samples.pop("train"), spec, missing))
    else:
        classes, every = _folder_samples(root)
        samples = _seeded_split(every, spec, ["val", "test"])
    out = {}
    for s in ("train", "val", "test"):
        if not samples.get(s):
            raise HwnasError(f"image folder {root}: the {s} split has no images (add {s}/ or more images per class)")
        paths, labels = [p for p, _ in samples[s]], [c for _, c in samples[s]]
        out[s] = (LazyImages(len(paths), _decode_files(paths, prep.channels), prep, IMAGE_CACHE_ITEMS),
                  torch.tensor(labels, dtype=torch.int64))
    return DatasetSplits("image-folder", num_classes=len(classes), preprocessing=prep, classes=classes, **out)


def _seeded_split(samples: List[Tuple[str, int]], spec: DataSpec, names: List[str]) -> Dict[str, List]:
    """Per class, a seeded ``val_fraction`` / ``test_fraction`` of the images for each missing split."""
    rng = np.random.default_rng(spec.seed)
    fractions = {"val": spec.val_fraction, "test": spec.test_fraction}
    out: Dict[str, List] = {"train": []}
    out.update({n: [] for n in names})
    for label in sorted({c for _, c in samples}):
        items = [s for s in samples if s[1] == label]
        order = rng.permutation(len(items))
        start = 0
        for name in names:
            take = max(1, int(round(fractions[name] * len(items)))) if len(items) > len(names) else 0
            out[name] += [items[i] for i in order[start:start + take]]
            start += take
        out["train"] += [items[i] for i in order[start:]]
    return out


LOADERS = {"fmnist-mini": _load_embedded, "fashion-mnist": _load_idx_dataset, "mnist": _load_idx_dataset,
           "cifar10": _load_cifar, "cifar100": _load_cifar, "image-folder": _load_image_folder}


def load_dataset(spec: Union[str, Mapping[str, Any], DataSpec]) -> DatasetSplits:
    """A data spec (see the module's docstring) -> :class:`DatasetSplits`; any problem is one HwnasError line."""
    parsed = parse_spec(spec)
    return LOADERS[parsed.kind](parsed)
