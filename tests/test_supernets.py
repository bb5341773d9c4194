import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_extract_is_independent, max_parity_error, randomise_batchnorms
from hwnas import supernets
from hwnas.errors import HwnasError
from hwnas.supernets.base import calibration_batches, measure_accuracy, recalibrate_bn, subnet_accuracy
from hwnas.supernets.elastic_mbv3 import MobileNetV3Subnet, arch_key, config_from_arch_key
from hwnas.supernets.train import TrainSettings, augment_batch, progressive_phases, train_supernet

REPO = Path(__file__).resolve().parents[1]
OFA_TABLE = Path(os.environ.get("HWNAS_SHARED", REPO / ".." / "shared")) / "data" / "hwnas-bench" / "ofa.csv.gz"
SMALL = dict(stem_width=8, stage_widths=(8, 16), stage_strides=(2, 2), stage_se=(False, True), max_depth=3,
             head_width=32, resolutions=(16, 22, 28))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return randomise_batchnorms(supernets.create("elastic_mbv3", **SMALL)).eval()


@pytest.fixture(scope="module")
def default():
    return supernets.load_default()


@pytest.fixture(scope="module")
def data():
    return supernets.load_dataset("fmnist-mini")


def configs_to_check(net, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [net.largest_config(), net.smallest_config()] + [net.sample(rng) for _ in range(n)]


def test_parity_small_random_instance(small):
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    assert max_parity_error(small, configs_to_check(small, 60), x) <= 1e-5


def test_parity_shipped_default(default, data):
    x = data.val[0][:6]
    assert max_parity_error(default, configs_to_check(default, 50, seed=1), x) <= 1e-5


@pytest.fixture(scope="module")
def ofa_small_res():
    """The full once-for-all MobileNetV3 shape (first block, per-stage activations, feature mix) at small inputs."""
    torch.manual_seed(0)
    return randomise_batchnorms(supernets.create("ofa_mbv3_w1", num_classes=10, resolutions=(32, 40, 48))).eval()


def test_parity_ofa_shaped_instance(ofa_small_res):
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    assert max_parity_error(ofa_small_res, configs_to_check(ofa_small_res, 50, seed=2), x) <= 1e-5


def test_ofa_preset_shape_and_checkpoint(ofa_small_res, tmp_path):
    net = supernets.create("ofa_mbv3_w1")
    assert "ofa_mbv3_w1" in supernets.names() and net.registry_name == "ofa_mbv3_w1"
    assert len(net.blocks) == 20 and net.space.n_var == 20 + 20 + 5 + 1
    assert sum(p.numel() for p in net.parameters()) == 7_680_160  # once-for-all reports 7.7 M for this supernet
    assert net.init_kwargs["resolutions"] == tuple(range(128, 225, 4))
    assert [type(m).__name__ for m in net.stem] == ["ConvNormAct", "DepthwiseSeparableConv"]
    assert [type(b.block.bn1.act).__name__ for b in net.blocks[::4]] == ["ReLU", "ReLU", "Hardswish", "Hardswish",
                                                                         "Hardswish"]
    assert [type(m).__name__ for m in net.classifier] == ["Linear", "Hardswish", "Dropout", "Linear"]
    assert net.classifier[0].in_features == 960 and net.classifier[0].out_features == 1280
    # A checkpoint names the preset, so devices and experiments see `ofa_mbv3_w1`.
    loaded = supernets.load_checkpoint(supernets.save_checkpoint(ofa_small_res, tmp_path / "ofa.pt", {}))
    assert loaded.registry_name == "ofa_mbv3_w1" and loaded.init_kwargs == ofa_small_res.init_kwargs
    config = loaded.sample(np.random.default_rng(0))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded.extract(config)(x), ofa_small_res.extract(config)(x), rtol=0, atol=0)


def test_new_options_off_by_default_keep_the_old_layout(default):
    assert type(default.stem).__name__ == "ConvNormAct" and len(default.classifier) == 2
    ckpt = torch.load(supernets.DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
    assert list(default.state_dict()) == list(ckpt["state_dict"])
    assert default.init_kwargs == ckpt["kwargs"]  # device lookup tables are keyed on these
    with pytest.raises(HwnasError, match="one activation per stage"):
        supernets.create("elastic_mbv3", stage_acts=["relu"])


def test_extracted_model_is_plain_and_sized(small):
    config = small.smallest_config()
    sub = small.extract(config)
    assert isinstance(sub, MobileNetV3Subnet) and sub.input_resolution == config["r"]
    assert len(sub.blocks) == sum(config[f"d{i}"] for i in range(2))
    dw = sub.blocks[0].conv_dw
    assert type(dw) is nn.Conv2d and dw.kernel_size == (3, 3) and dw.out_channels == 8 * 3
    assert not any(isinstance(m, supernets.Supernet) for m in sub.modules())


def test_extracted_model_holds_no_reference(small):
    assert_extract_is_independent(small, small.sample(np.random.default_rng(3)), torch.randn(4, 1, 28, 28))


def test_recalibrate_bn_matches_manual_average(small):
    sub = small.extract(small.sample(np.random.default_rng(4)))
    batches = [torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    bns = [m for m in sub.modules() if isinstance(m, nn.BatchNorm2d)]
    seen = {bn: [] for bn in bns}
    hooks = [bn.register_forward_hook(lambda m, inp, out: seen[m].append(inp[0].detach())) for bn in bns]
    old_mean = [bn.running_mean.clone() for bn in bns]
    recalibrate_bn(sub, batches)
    for h in hooks:
        h.remove()
    assert not sub.training and all(bn.momentum == 0.1 for bn in bns)
    for bn, before in zip(bns, old_mean):
        inputs = seen[bn]
        assert len(inputs) == len(batches)
        manual_mean = torch.stack([t.mean((0, 2, 3)) for t in inputs]).mean(0)
        manual_var = torch.stack([t.var((0, 2, 3), unbiased=True) for t in inputs]).mean(0)
        torch.testing.assert_close(bn.running_mean, manual_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var, manual_var, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(bn.running_mean, before)


def test_recalibrating_supernet_slices_equals_recalibrating_extracted(small):
    """The supernet's sliced BN (cumulative average) estimates the same stats as plain BN."""
    net = supernets.create("elastic_mbv3", **SMALL)
    net.load_state_dict(small.state_dict())
    config = net.sample(np.random.default_rng(5))
    batches = [torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    sub = recalibrate_bn(net.extract(config), batches)
    net.set_active(config)
    recalibrate_bn(net, batches)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), sub(x), rtol=1e-4, atol=1e-5)


def test_measure_accuracy_counts_correct():
    class Fixed(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float()

    X = torch.tensor([0, 1, 2, 2, 1], dtype=torch.float32).view(5, 1, 1, 1)
    assert measure_accuracy(Fixed(), X, torch.tensor([0, 1, 2, 0, 0]), batch_size=2) == 3 / 5


def test_calibration_batches_are_seeded(data):
    a = calibration_batches(data.train[0], 300, seed=0, batch_size=128)
    b = calibration_batches(data.train[0], 300, seed=0, batch_size=128)
    c = calibration_batches(data.train[0], 300, seed=1, batch_size=128)
    assert [len(t) for t in a] == [128, 128, 44]
    assert all(torch.equal(s, t) for s, t in zip(a, b)) and not torch.equal(a[0], c[0])


def test_arch_key_roundtrip(small):
    rng = np.random.default_rng(6)
    for _ in range(20):
        config = small.sample(rng)
        key = arch_key(config)
        assert config_from_arch_key(key) == config
    assert arch_key(small.largest_config()) == "ks=777777;e=666666;d=33;r=28"


@pytest.mark.skipif(not OFA_TABLE.is_file(), reason="../shared/data/hwnas-bench/ofa.csv.gz is absent")
def test_arch_key_reads_ofa_table_keys():
    with gzip.open(OFA_TABLE, "rt") as f:
        next(f)
        keys = [next(f).split(",")[1] for _ in range(20)]
    for key in keys:
        config = config_from_arch_key(key)
        assert sum(k.startswith("ks") for k in config) == 20 and sum(k.startswith("d") for k in config) == 5
        assert arch_key(config) == key


@pytest.mark.skipif(not OFA_TABLE.is_file(), reason="../shared/data/hwnas-bench/ofa.csv.gz is absent")
def test_ofa_preset_space_holds_the_ofa_table_archs():
    net = supernets.create("ofa_mbv3_w1")
    with gzip.open(OFA_TABLE, "rt") as f:
        next(f)
        keys = [next(f).split(",")[1] for _ in range(50)]
    for key in keys:
        assert net.describe(net.space.decode(net.space.encode(config_from_arch_key(key)))) == key


@pytest.mark.parametrize("key", ["", "ks=33;e=3;d=1;r=20", "ks=333;e=333;d=11;r=20", "e=33;ks=33;d=1;r=2"])
def test_bad_arch_keys(key):
    with pytest.raises(HwnasError):
        config_from_arch_key(key)


def test_space_roundtrip_and_extremes(small):
    space = small.space
    names = [v.name for v in space.variables]
    assert names[:3] == ["ks0", "ks1", "ks2"] and names[-3:] == ["d0", "d1", "r"]
    assert space.n_var == 6 + 6 + 2 + 1
    rng = np.random.default_rng(7)
    for genome in space.sample(rng, 20):
        assert np.array_equal(space.encode(space.decode(genome)), genome)
    config = small.sample(rng)
    assert space.decode(space.encode(config)) == config
    assert set(small.smallest_config().values()) == {3, 2, 16}
    assert small.largest_config()["r"] == 28 and small.largest_config()["d0"] == 3


def test_invalid_config_rejected(small):
    config = small.largest_config()
    with pytest.raises(HwnasError, match="ks0"):
        small.set_active({**config, "ks0": 9})
    with pytest.raises(HwnasError, match="lacks"):
        small.extract({k: v for k, v in config.items() if k != "r"})


def test_restrict_holds_non_elastic_dimensions_at_largest(small):
    rng = np.random.default_rng(8)
    largest = small.largest_config()
    for _ in range(10):
        config = small.sample(rng, elastic=["resolution", "kernel"])
        assert all(config[k] == largest[k] for k in config if k[0] in "de")
    assert small.smallest_config(["resolution"]) == {**largest, "r": 16}
    with pytest.raises(HwnasError, match="width"):
        small.sample(rng, elastic=["width"])


def test_progressive_phases_open_in_ofa_order(small):
    phases = progressive_phases(small, 8, progressive=True)
    assert phases[0] == ["resolution"] and phases[-1] == ["resolution", "kernel", "depth", "expand"]
    assert [len(p) for p in phases] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert progressive_phases(small, 3, progressive=False) == [None] * 3


def test_augment_batch_shifts_and_flips_only():
    x = torch.randn(16, 1, 28, 28)
    out = augment_batch(x, torch.Generator().manual_seed(0), shift=0)
    assert out.shape == x.shape
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    assert all(torch.equal(o, xi) or f for o, xi, f in zip(out, x, flipped)) and 0 < sum(flipped) < 16
    shifted = augment_batch(x, torch.Generator().manual_seed(0), shift=2)
    assert shifted.shape == x.shape and not torch.equal(shifted, out)


def test_registry_and_checkpoint_roundtrip(small, tmp_path):
    assert "elastic_mbv3" in supernets.names()
    with pytest.raises(HwnasError, match="elastic_mbv3"):
        supernets.create("resnet_supernet")
    # str subclasses such as torch.__version__ would make weights_only loading fail if stored as-is
    path = supernets.save_checkpoint(small, tmp_path / "net.pt", {"dataset": "unit-test", "torch": torch.__version__})
    loaded = supernets.load_checkpoint(path)
    assert isinstance(loaded, supernets.ElasticMobileNetV3)
    assert loaded.meta == {"dataset": "unit-test", "torch": str(torch.__version__)}
    with pytest.raises(HwnasError, match="JSON"):
        supernets.save_checkpoint(small, tmp_path / "bad_meta.pt", {"model": small})
    config = small.sample(np.random.default_rng(9))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.extract(config)(x), small.extract(config)(x), rtol=0, atol=0)


def test_bad_checkpoints_raise(tmp_path):
    with pytest.raises(HwnasError, match="does not exist"):
        supernets.load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    for seed in range(20):  # random bytes make the unpickler fail in many different ways
        garbage.write_bytes(np.random.default_rng(seed).bytes(256))
        with pytest.raises(HwnasError, match="corrupt"):
            supernets.load_checkpoint(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(supernets.DEFAULT_CHECKPOINT.read_bytes()[:5000])
    with pytest.raises(HwnasError, match="corrupt"):
        supernets.load_checkpoint(truncated)
    wrong = tmp_path / "wrong.pt"
    torch.save({"weights": torch.zeros(2)}, wrong)
    with pytest.raises(HwnasError, match="not a supernet checkpoint"):
        supernets.load_checkpoint(wrong)
    mismatched = tmp_path / "mismatched.pt"
    ckpt = supernets.checkpoint_dict(supernets.create("elastic_mbv3", **SMALL), {})
    ckpt["kwargs"] = {**ckpt["kwargs"], "head_width": 48}
    torch.save(ckpt, mismatched)
    with pytest.raises(HwnasError, match="do not fit"):
        supernets.load_checkpoint(mismatched)


def test_shipped_checkpoint_records_training_and_shows_tradeoff(default, data):
    assert default.meta["dataset"] == "fmnist-mini" and "settings" in default.meta
    assert supernets.DEFAULT_CHECKPOINT.stat().st_size < 20e6
    largest = subnet_accuracy(default, default.largest_config(), data)
    smallest = subnet_accuracy(default, default.smallest_config(), data)
    assert largest > smallest and largest > 0.8


def tiny_data(data, n=128):
    return supernets.DatasetSplits("tiny", train=(data.train[0][:n], data.train[1][:n]),
                                   val=(data.val[0][:n], data.val[1][:n]), test=data.test, num_classes=10)


class Crash(Exception):
    pass


def crash_after_first_epoch(record):
    if record["epoch"] == 1:
        raise Crash


def test_training_resumes_exactly(data, tmp_path):
    tiny = tiny_data(data)
    settings = TrainSettings(epochs=2, batch_size=64, threads=1, progress=False, eval_every=0, progressive=True)

    def fresh(seed):
        torch.manual_seed(seed)
        return supernets.create("elastic_mbv3", **SMALL)

    straight = fresh(0)
    result = train_supernet(straight, tiny, settings)
    assert [r["epoch"] for r in result.history] == [1, 2] and not straight.training

    state = tmp_path / "state.pt"
    with pytest.raises(Crash):
        train_supernet(fresh(0), tiny, settings, state_path=state, on_epoch=crash_after_first_epoch)
    resumed = fresh(1)  # different initial weights: everything must come from the state file
    result = train_supernet(resumed, tiny, settings, state_path=state)
    assert result.resumed_from_epoch == 1 and [r["epoch"] for r in result.history] == [1, 2]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(straight.state_dict()["blocks.0.block.conv_pw.weight"],
                           fresh(0).state_dict()["blocks.0.block.conv_pw.weight"])

    with pytest.raises(HwnasError, match="different settings"):
        train_supernet(fresh(0), tiny, TrainSettings(**{**settings.__dict__, "lr": 0.5}), state_path=state)
