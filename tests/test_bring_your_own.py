"""A user's own data and weights: an image folder of real PNGs, CIFAR's python format, and a
3-channel once-for-all-shaped supernet trained, evaluated and searched on them (CLI and API)."""

import csv
import json
import pickle

import numpy as np
import pytest
import torch
import yaml

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.supernets.datasets import load_dataset

CLASSES = ("circle", "stripes", "square")
# A tiny network of once-for-all's MobileNetV3 shape (5 stages, first block, feature mix, SE, 3 channels).
TINY_OFA = {"num_classes": 3, "stage_widths": [8, 16, 16, 24, 24], "head_width": 48, "mix_width": 64,
            "resolutions": [32, 40], "stem_width": 8, "max_depth": 3}


def make_image_folder(root, per_class=20, size=24, splits=False, seed=0):
    """Class-dependent pictures (a colour and a shape) with noise, saved as real PNG files."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    shapes = {"circle": (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2,
              "stripes": (xx // 3) % 2 == 0, "square": (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4)}
    colours = {"circle": (220, 40, 40), "stripes": (40, 200, 60), "square": (50, 60, 230)}
    for c in CLASSES:
        for i in range(per_class):
            split = ("train", "train", "train", "val", "test")[i % 5] if splits else None
            folder = root / split / c if split else root / c
            folder.mkdir(parents=True, exist_ok=True)
            img = rng.integers(0, 60, (size, size, 3))
            img[shapes[c]] = np.array(colours[c]) - rng.integers(0, 30, 3)
            Image.fromarray(img.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def test_image_folder_splits_classes_and_preprocessing(tmp_path):
    flat = make_image_folder(tmp_path / "flat", per_class=20)
    data = load_dataset({"kind": "image-folder", "path": str(flat), "size": 16, "val_fraction": 0.2,
                         "test_fraction": 0.1, "seed": 3})
    assert data.classes == sorted(CLASSES) and data.num_classes == 3
    sizes = [len(s[1]) for s in (data.train, data.val, data.test)]
    assert sizes == [3 * 14, 3 * 4, 3 * 2]  # per class: 20 * 0.2 = 4 val, 2 test, the rest train
    assert data.input_shape == (3, 16, 16)
    x = data.val[0][torch.tensor([0, 1])]
    assert x.dtype == torch.float32 and x.shape == (2, 3, 16, 16)
    again = load_dataset({"kind": "image-folder", "path": str(flat), "size": 16, "val_fraction": 0.2,
                          "test_fraction": 0.1, "seed": 3})
    assert torch.equal(again.val[1], data.val[1]) and torch.equal(again.val[0][0:5], data.val[0][0:5])  # seeded
    # Decoded pixels are the PNG's, normalised as declared.
    from PIL import Image

    gray = load_dataset({"kind": "image-folder", "path": str(flat), "channels": 1, "mean": [0.0], "std": [1.0]})
    assert gray.input_shape == (1, 24, 24)
    assert float(gray.train[0][0:1].max()) <= 1.0 and float(gray.train[0][0:1].min()) >= 0.0
    split = load_dataset(f"image-folder:{make_image_folder(tmp_path / 'split', per_class=10, splits=True)}")
    assert [len(s[1]) for s in (split.train, split.val, split.test)] == [18, 6, 6]
    first = sorted((tmp_path / "split" / "train" / "circle").glob("*.png"))[0]
    pixels = np.asarray(Image.open(first).convert("RGB"), dtype=np.float32) / 255
    expected = (torch.from_numpy(pixels).permute(2, 0, 1) - 0.5) / 0.5
    torch.testing.assert_close(split.train[0][0], expected, atol=1e-6, rtol=0)


def test_cifar_python_format_from_a_local_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 1100) for i in range(1, 6)] + [("test_batch", 300)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    data = load_dataset(f"cifar10:{tmp_path}")
    assert [len(s[1]) for s in (data.train, data.val, data.test)] == [500, 5000, 300]
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f)
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(3, 1, 1)
    std = torch.tensor((0.2470, 0.2435, 0.2616)).view(3, 1, 1)
    expected = (torch.from_numpy(raw[b"data"][7].reshape(3, 32, 32)).float() / 255 - mean) / std
    torch.testing.assert_close(data.test[0][7], expected)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(HwnasError, match="data_batch_3: not a CIFAR python batch"):
        load_dataset(f"cifar10:{tmp_path}")


@pytest.mark.parametrize("spec, message", [
    ({"kind": "image-folder"}, "needs a local folder"),
    ("image-folder:/no/such/folder", "does not exist"),
    ({"kind": "image-folder", "path": "x", "colour": 3}, "unknown key"),
])
def test_bad_data_specs_are_one_line(spec, message):
    with pytest.raises(HwnasError, match=message) as err:
        load_dataset(spec)
    assert "\n" not in str(err.value)


def test_an_empty_image_folder_is_refused(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(HwnasError, match="image folder"):
        load_dataset(f"image-folder:{tmp_path / 'empty'}")


def test_imported_once_for_all_weights_evaluate_on_an_image_folder(tmp_path, capsys):
    """Random weights in once-for-all's own layout -> hwnas supernet import -> eval on 3-channel PNGs."""
    from test_loaders import ofa_state_dict

    folder = make_image_folder(tmp_path / "images", per_class=10, splits=True)
    torch.save(ofa_state_dict(num_classes=3), tmp_path / "ofa.pth")
    ckpt = tmp_path / "imported.pt"
    assert main(["supernet", "import", str(tmp_path / "ofa.pth"), "--layout", "ofa_mbv3", "--out", str(ckpt)]) == 0
    out = tmp_path / "eval.json"
    assert main(["supernet", "eval", str(ckpt), "--data", f"image-folder:{folder}", "--configs", "smallest",
                 "--calib-images", "8", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert 0.0 <= result["configs"][0]["accuracy"] <= 1.0
    # The experiment file that names it validates (3-channel data for a 3-channel network) ...
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump({"name": "ofa", "space": {"supernet": "ofa_mbv3_w1", "checkpoint": str(ckpt)},
                                   "data": f"image-folder:{folder}",
                                   "objectives": {"accuracy": "max", "latency_ms": "min"}}))
    assert main(["validate", str(exp)]) == 0
    # ... and grayscale data for it is refused in one line, naming what to set.
    exp.write_text(exp.read_text().replace(f"image-folder:{folder}", "fmnist-mini"))
    capsys.readouterr()
    assert main(["validate", str(exp)]) == 2
    err = capsys.readouterr().err
    assert "3-channel" in err and "channels: 3" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def trained_tiny_ofa(tmp_path_factory):
    """A tiny ofa_mbv3_w1-shaped supernet trained for one epoch on a 3-class folder of PNGs (CLI)."""
    tmp = tmp_path_factory.mktemp("byo")
    folder = make_image_folder(tmp / "images", per_class=30, size=24)
    data = {"kind": "image-folder", "path": str(folder), "size": 32, "val_fraction": 0.2, "test_fraction": 0.1}
    train_cfg = tmp / "train.yaml"
    train_cfg.write_text(yaml.safe_dump({"supernet": "ofa_mbv3_w1", "kwargs": TINY_OFA, "data": data,
                                         "settings": {"epochs": 1, "batch_size": 16, "lr": 0.05, "threads": 1},
                                         "out": str(tmp / "tiny_ofa.pt")}))
    assert main(["supernet", "train", str(train_cfg), "--quiet"]) == 0
    return tmp, data


def test_a_trained_3_channel_supernet_searches_the_same_through_cli_and_api(trained_tiny_ofa):
    import hwnas

    tmp, data = trained_tiny_ofa
    experiment = {"name": "byo", "space": {"supernet": "ofa_mbv3_w1", "checkpoint": str(tmp / "tiny_ofa.pt")},
                  "data": data, "devices": [{"name": "local-cpu", "batch_size": 2, "warmup": 1, "repeats": 3}],
                  "objectives": {"accuracy": "max", "latency_ms": "min"},
                  "strategy": {"name": "random", "population": 4, "generations": 1, "seed": 1},
                  "accuracy_eval": {"calib_images": 32}}
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["run", str(path), "--out", str(tmp / "cli"), "--quiet"]) == 0
    run = hwnas.run(experiment, out=tmp / "api")
    with open(tmp / "cli" / "candidates.csv") as f:
        cli = list(csv.DictReader(f))
    api = run.rows()
    assert len(cli) == len(api) >= 3
    assert [r["arch"] for r in cli] == [r["arch"] for r in api]
    assert [float(r["accuracy"]) for r in cli] == [r["accuracy"] for r in api]  # accuracy is deterministic
    assert all(0 <= r["accuracy"] <= 1 and r["latency_ms"] > 0 for r in api)
    assert "image-folder" in run.report()

    # The top pick of one run exported through the CLI and through the API: the same network, the data's
    # preprocessing. (Each run's front depends on its own measured latencies, so the pick is compared on one run.)
    assert main(["export", str(tmp / "cli"), "--rank", "1", "--format", "onnx", "--out", str(tmp / "ex-cli")]) == 0
    [exported] = hwnas.load_run(tmp / "cli").export(tmp / "ex-api", "onnx", rank=1)
    cli_info = json.loads(next((tmp / "ex-cli").rglob("model.json")).read_text())
    assert cli_info["candidate"]["arch"] == exported.info["candidate"]["arch"]
    assert exported.info["preprocessing"]["channels"] == 3 and exported.info["preprocessing"]["size"] == 32
    assert exported.info["parity"]["formats"]["onnx"]["passed"]
    model = hwnas.load(exported.folder)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_the_example_training_file_is_valid():
    from pathlib import Path

    from hwnas import supernets
    from hwnas.cli_supernets import load_train_config

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "experiments" / "train_tiny_ofa.yaml")
    net = supernets.create(cfg.supernet, **cfg.kwargs)
    assert net.init_kwargs["in_chans"] == 3 and cfg.data["kind"] == "image-folder"
