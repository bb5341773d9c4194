"""Elastic ResNet and elastic ViT: extraction parity, independence, space, training sanity."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import make_divisible
from torch import nn

from conftest import assert_extract_is_independent, max_parity_error
from hwnas import supernets
from hwnas.errors import HwnasError
from hwnas.supernets.base import calibration_batches, recalibrate_bn, subnet_accuracy
from hwnas.supernets.elastic_resnet import Bottleneck, ElasticResNet, ResNetSubnet
from hwnas.supernets.elastic_vit import ElasticViT, ViTSubnet
from hwnas.supernets.train import TrainSettings, progressive_phases, train_supernet

# Small instances for 28 x 28 one-channel inputs. The ResNet's channel divisor is small so
# that every width and expand option gives a different channel count.
RESNET = dict(stem_width=8, stem_stride=2, stage_widths=(16, 24), stage_strides=(1, 2), base_depths=(1, 2),
              resolutions=(20, 24, 28), channel_divisor=2)
VIT = dict(embed_dims=(16, 24, 32), heads=(1, 2, 3), head_dim=8, mlp_ratios=(1, 2, 3), min_depth=1, max_depth=3,
           patch_size=7)
FAMILIES = {"resnet": (ElasticResNet, RESNET), "vit": (ElasticViT, VIT)}


def randomise_norms(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm affine parameters and BN statistics, so parity exercises every slice."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            c = m.weight.shape[0]
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.2
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.data = torch.randn(m.num_features, generator=g) * 0.2
            m.running_var.data = torch.rand(m.num_features, generator=g) + 0.5
    return net


def build(family: str, seed: int = 0, **overrides) -> supernets.Supernet:
    cls, kwargs = FAMILIES[family]
    torch.manual_seed(seed)
    return randomise_norms(cls(**{**kwargs, **overrides}), seed).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on 2 shared cores, 2 threads contend and run several times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def net(request):
    return build(request.param)


@pytest.fixture(scope="module")
def data():
    return supernets.load_dataset("fmnist-mini")


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def configs_to_check(net: supernets.Supernet, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [net.largest_config(), net.smallest_config()] + [net.sample(rng) for _ in range(n)]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parity_on_random_configs(net):
    assert max_parity_error(net, configs_to_check(net, 55), images(4)) <= 1e-5


@pytest.mark.parametrize("family, overrides", [("resnet", dict(resolutions=(), stem_pool=True, act_layer="silu")),
                                               ("vit", dict(pool="mean"))])
def test_parity_of_variants(family, overrides):
    net = build(family, seed=2, **overrides)
    assert max_parity_error(net, configs_to_check(net, 10, seed=2), images(3)) <= 1e-5


def test_parity_on_real_images_after_training_steps(data):
    """Trained weights (not just initial ones) extract exactly too, in channels-last as in training."""
    for family in FAMILIES:
        net = build(family, seed=3).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        rng = np.random.default_rng(3)
        for step in range(3):
            net.set_active(net.sample(rng))
            x = data.train[0][step * 32:(step + 1) * 32]
            opt.zero_grad()
            F.cross_entropy(net(x), data.train[1][step * 32:(step + 1) * 32]).backward()
            opt.step()
        net.eval().to(memory_format=torch.channels_last)
        x = data.val[0][:8].contiguous(memory_format=torch.channels_last)
        assert max_parity_error(net, configs_to_check(net, 5, seed=4), x) <= 1e-5, family
        net.to(memory_format=torch.contiguous_format)


def test_extracted_model_holds_no_reference(net):
    config = net.sample(np.random.default_rng(5))
    assert not any(isinstance(m, supernets.Supernet) for m in net.extract(config).modules())
    assert_extract_is_independent(net, config, images(3, seed=6))


def test_space_roundtrip_and_groups(net):
    space = net.space
    rng = np.random.default_rng(7)
    for genome in space.sample(rng, 30):
        assert np.array_equal(space.encode(space.decode(genome)), genome)
    config = net.sample(rng)
    assert space.decode(space.encode(config)) == config
    assert net.largest_config() == space.decode(space.largest())
    grouped = [name for members in net.elastic_groups().values() for name in members]
    assert sorted(grouped) == sorted(v.name for v in space.variables)  # each variable in exactly one group
    phases = progressive_phases(net, 4, progressive=True)
    assert phases[-1] == list(net.elastic_groups())


def test_smallest_is_smaller_and_largest_uses_every_weight(net):
    smallest, largest = net.extract(net.smallest_config()), net.extract(net.largest_config())
    assert n_params(smallest) < n_params(largest) == n_params(net)
    sizes = [n_params(net.extract(c)) for c in configs_to_check(net, 10, seed=8)]
    assert len(set(sizes)) > 3 and min(sizes) == sizes[1] and max(sizes) == sizes[0]


def test_resnet_extracted_structure():
    net = build("resnet")
    config = {**net.largest_config(), "d0": 1, "d1": 3, "w0": 0.65, "w1": 0.8, "e0": 0.2, "e4": 0.35, "r": 24}
    sub = net.extract(config)
    assert isinstance(sub, ResNetSubnet) and sub.input_resolution == 24
    assert [type(b) for b in sub.blocks] == [Bottleneck] * 4
    first, second_stage = sub.blocks[0], sub.blocks[1]
    w0, w1 = make_divisible(16 * 0.65, 2), make_divisible(24 * 0.8, 2)
    assert first.conv1.in_channels == 8 and first.conv3.out_channels == w0
    assert first.conv2.out_channels == make_divisible(w0 * 0.2, 2)
    assert second_stage.conv1.in_channels == w0 and second_stage.conv3.out_channels == w1
    assert second_stage.conv2.out_channels == make_divisible(w1 * 0.35, 2) and second_stage.conv2.stride == (2, 2)
    assert second_stage.downsample is not None and sub.blocks[2].downsample is None
    assert sub.classifier.in_features == w1
    assert sub(images(2)).shape == (2, 10)  # native 28 x 28 input, resized inside


def test_vit_extracted_structure():
    net = build("vit")
    config = {**net.largest_config(), "depth": 2, "embed_dim": 24, "heads0": 1, "heads1": 3, "mlp0": 2, "mlp1": 1}
    sub = net.extract(config)
    assert isinstance(sub, ViTSubnet) and len(sub.blocks) == 2
    assert sub.patch_embed.proj.out_channels == 24 and sub.pos_embed.shape == (1, 17, 24)
    heads = [b.attn.num_heads for b in sub.blocks]
    hidden = [b.mlp.fc1.out_features for b in sub.blocks]
    assert heads == [1, 3] and hidden == [48, 24] and sub.blocks[0].attn.qkv.out_features == 3 * 8
    linear_or_norm = {type(m) for m in sub.modules() if not list(m.children())}
    assert {nn.Linear, nn.LayerNorm, nn.Conv2d} <= linear_or_norm


def test_invalid_configs_and_arguments_raise():
    resnet, vit = build("resnet"), build("vit")
    with pytest.raises(HwnasError, match="w0"):
        resnet.set_active({**resnet.largest_config(), "w0": 0.5})
    with pytest.raises(HwnasError, match="lacks"):
        vit.extract({k: v for k, v in vit.largest_config().items() if k != "depth"})
    with pytest.raises(HwnasError, match="takes"):
        vit(torch.randn(1, 1, 32, 32))
    with pytest.raises(HwnasError, match="one entry per stage"):
        ElasticResNet(stage_widths=(8, 16), stage_strides=(1,))
    with pytest.raises(HwnasError, match="width_mults"):
        ElasticResNet(width_mults=(0.5, 1.5))
    with pytest.raises(HwnasError, match="patch_size"):
        ElasticViT(img_size=28, patch_size=5)
    with pytest.raises(HwnasError, match="pool"):
        ElasticViT(pool="max")


def test_fixed_resolution_resnet_has_no_resolution_variable():
    net = build("resnet", resolutions=())
    assert "r" not in [v.name for v in net.space.variables]
    assert list(net.elastic_groups()) == ["depth", "expand", "width"]
    assert net.extract(net.largest_config()).input_resolution is None


def test_rebuild_from_init_kwargs(net, tmp_path):
    """What a checkpoint stores (init kwargs + state dict) rebuilds the same supernet."""
    path = tmp_path / "net.pt"
    torch.save({"kwargs": net.init_kwargs, "state_dict": net.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    rebuilt = type(net)(**saved["kwargs"])
    rebuilt.load_state_dict(saved["state_dict"])
    config = net.sample(np.random.default_rng(9))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.extract(config)(images(2)), net.extract(config)(images(2)), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["elastic_resnet", "elastic_vit"])
def test_registered_checkpoint_roundtrip(name, tmp_path):
    if name not in supernets.names():
        pytest.skip(f"{name} is not registered in hwnas.supernets yet")
    family = name.removeprefix("elastic_")
    net = supernets.create(name, **FAMILIES[family][1])
    loaded = supernets.load_checkpoint(supernets.save_checkpoint(net, tmp_path / "net.pt", {"dataset": "x"}))
    assert type(loaded) is type(net) and loaded.meta == {"dataset": "x"}
    config = net.sample(np.random.default_rng(10))
    with torch.no_grad():
        torch.testing.assert_close(loaded.extract(config)(images(2)), net.eval().extract(config)(images(2)),
                                   rtol=0, atol=0)


def test_recalibrating_supernet_slices_equals_recalibrating_extracted():
    """Sliced BatchNorm in the supernet estimates the same statistics as the extracted plain BN."""
    net = build("resnet", seed=11)
    config = net.sample(np.random.default_rng(11))
    batches = [images(8, seed=s) for s in range(2)]
    sub = recalibrate_bn(net.extract(config), batches)
    net.set_active(config)
    recalibrate_bn(net, batches)
    with torch.no_grad():
        torch.testing.assert_close(net(images(4)), sub(images(4)), rtol=1e-4, atol=1e-5)


# A ViT starts slower (and with AdamW rather than SGD), so it gets more steps.
@pytest.mark.parametrize("family, optimizer, lr, steps", [("resnet", "sgd", 0.1, 30), ("vit", "adamw", 3e-3, 60)])
def test_sandwich_training_lowers_the_loss(family, optimizer, lr, steps, data):
    """Sandwich-rule steps (train.py) on real Fashion-MNIST lower largest and smallest losses."""
    torch.manual_seed(0)
    net = FAMILIES[family][0](**FAMILIES[family][1])
    n = steps * 32
    subset = supernets.DatasetSplits("fmnist-mini-head", train=(data.train[0][:n], data.train[1][:n]),
                                     val=data.val, test=data.test, num_classes=10)
    X, y = data.val[0][:500], data.val[1][:500]
    calibration = calibration_batches(data.train[0], 500, seed=0)

    def losses():
        """Val loss of the largest and smallest, extracted with recalibrated BN (how they are evaluated)."""
        out = []
        with torch.no_grad():
            for config in (net.largest_config(), net.smallest_config()):
                out.append(F.cross_entropy(recalibrate_bn(net.extract(config), calibration)(X), y).item())
        return np.array(out)

    before = losses()
    settings = TrainSettings(epochs=1, batch_size=32, optimizer=optimizer, lr=lr, threads=1, progress=False,
                             eval_every=0)
    result = train_supernet(net, subset, settings)
    after = losses()
    assert len(result.history) == 1 and not net.training
    assert (after < before - 0.25).all(), (before, after)
    accuracy = subnet_accuracy(net, net.largest_config(), data, calib_images=500)
    assert accuracy > 0.2  # twice chance, after a few dozen steps


@pytest.mark.parametrize("family,name", [("resnet", "elastic_resnet"), ("vit", "elastic_vit")])
def test_an_experiment_searches_this_family(family, name, tmp_path):
    """An experiment YAML names the family's registered supernet and a checkpoint; the search runs end to end."""
    import csv

    import yaml

    from hwnas.cli import main

    checkpoint = supernets.save_checkpoint(build(family), tmp_path / f"{name}.pt")
    cfg = {"name": name, "space": {"supernet": name, "checkpoint": str(checkpoint)}, "data": "fmnist-mini",
           "devices": [{"name": "local-cpu", "batch_size": 4, "warmup": 1, "repeats": 3}],
           "objectives": {"accuracy": {"goal": "max", "source": "predicted"}, "latency_ms": "min", "params": "min"},
           "strategy": {"population": 4, "generations": 2, "seed": 0, "initial_samples": 6},
           "accuracy_eval": {"calib_images": 32, "images": 64}}
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    with open(tmp_path / "run" / "front.csv") as f:
        front = list(csv.DictReader(f))
    assert front and all(r["accuracy_source"] == "measured" and float(r["params"]) > 0 for r in front)
    net = build(family)
    for r in front:  # the params the run measured are those of the sub-network it names
        config = {v.name: type(v.options[0])(r[v.name]) for v in net.space.variables}  # one column per variable
        assert float(r["params"]) == n_params(net.extract(config))
