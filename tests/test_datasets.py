import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.errors import HwnasError
from hwnas.supernets.datasets import EMBEDDED_DATA, NORMALISATION, load_dataset, read_idx

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path(os.environ.get("HWNAS_SHARED", REPO / ".." / "shared")) / "data" / "fashion-mnist"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzip-compressed when ``path`` ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())



pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mini():
    return load_dataset("fmnist-mini")


def test_embedded_splits_shapes_and_balance(mini):
    assert mini.name == "fmnist-mini" and mini.num_classes == 10 and mini.input_shape == (1, 28, 28)
    for split, n in (("train", 8000), ("val", 2000), ("test", 2000)):
        X, y = mini.split(split)
        assert X.dtype == torch.float32 and X.shape == (n, 1, 28, 28)
        assert y.dtype == torch.int64 and y.shape == (n,)
        assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10
    # normalised with the Fashion-MNIST training statistics: roughly zero mean, unit std
    assert abs(float(mini.train[0].mean())) < 0.05 and abs(float(mini.train[0].std()) - 1) < 0.05


def test_embedded_val_is_disjoint_from_train():
    with np.load(EMBEDDED_DATA) as z:
        train, val = set(z["source_indices_train"].tolist()), set(z["source_indices_val"].tolist())
        assert len(train) == 8000 and len(val) == 2000 and not train & val
        assert EMBEDDED_DATA.stat().st_size < 6.5e6


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(path, images)
    np.testing.assert_array_equal(read_idx(path), images)


def test_read_idx_rejects_bad_files(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x03\x04" + bytes(10))
    with pytest.raises(HwnasError, match="not an IDX file"):
        read_idx(bad_magic)
    truncated = tmp_path / "short"
    write_idx(truncated, np.zeros((3, 4, 4), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-5])
    with pytest.raises(HwnasError, match="header says"):
        read_idx(truncated)


def test_idx_folder_of_synthetic_files(tmp_path):
    """A complete (tiny, raw = uncompressed) MNIST-style folder loads with the 55000/5000 split rule."""
    rng = np.random.default_rng(1)
    n_train, n_test = 5003, 7
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    data = load_dataset(f"mnist:{tmp_path}")
    assert len(data.train[0]) == 3 and len(data.val[0]) == 5000 and len(data.test[0]) == n_test
    raw_first = read_idx(tmp_path / "train-images-idx3-ubyte")[0]
    mean, std = NORMALISATION["mnist"]
    torch.testing.assert_close(data.train[0][0, 0], (torch.tensor(raw_first).float() / 255 - mean) / std)


@pytest.mark.shared_data
@pytest.mark.skipif(not FMNIST.is_dir(), reason="../shared/data/fashion-mnist is absent")
def test_fashion_mnist_folder():
    data = load_dataset(f"fashion-mnist:{FMNIST}")
    assert data.name == "fashion-mnist" and data.num_classes == 10 and data.input_shape == (1, 28, 28)
    assert [len(s[0]) for s in (data.train, data.val, data.test)] == [55000, 5000, 10000]
    assert torch.bincount(data.test[1]).tolist() == [1000] * 10
    # val is the tail of the official training set
    raw = read_idx(FMNIST / "train-images-idx3-ubyte.gz")
    mean, std = NORMALISATION["fashion-mnist"]
    torch.testing.assert_close(data.val[0][-1, 0], (torch.tensor(raw[-1]).float() / 255 - mean) / std)


@pytest.mark.parametrize("spec", ["", "cifar10", "fashion-mnist", "fashion-mnist:", "imagenet:/data"])
def test_bad_specs_raise_one_clear_line(spec):
    with pytest.raises(HwnasError) as err:
        load_dataset(spec)
    message = str(err.value)
    assert "\n" not in message and repr(spec) in message and "fmnist-mini" in message


def test_missing_folder_and_missing_files(tmp_path):
    with pytest.raises(HwnasError, match="does not exist"):
        load_dataset(f"fashion-mnist:{tmp_path / 'nope'}")
    with pytest.raises(HwnasError, match="train-images-idx3-ubyte"):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_bad_split_name(mini):
    with pytest.raises(HwnasError, match="train, val, test"):
        mini.split("holdout")
