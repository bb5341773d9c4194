"""Loading once-for-all and timm MobileNetV3 weights (supernets/loaders.py).

The once-for-all state dict is built here from OFA's layout (``OFAMobileNetV3`` with
ks 3,5,7, e 3,4,6, d 2,3,4, w1.0, as in once-for-all's source), not from our mapping, and
``ofa_forward`` computes OFA's network on it directly: a misplaced tensor shows up as a
different output.
"""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from conftest import randomise_batchnorms
from hwnas.errors import HwnasError
from hwnas.supernets import OFAMobileNetV3, recalibrate_bn
from hwnas.supernets.loaders import load_layout, load_ofa_mbv3, load_timm_mobilenetv3

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OFA_WIDTHS, OFA_SE = (24, 40, 80, 112, 160), (False, True, False, True, True)
OFA_STRIDES, OFA_RELU = (2, 2, 2, 1, 2), (True, True, False, False, False)


def make_divisible(v, divisor=8):  # once-for-all's rounding of channel counts
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


def ofa_state_dict(seed=0, old_names=False, num_classes=1000):
    """Random tensors under once-for-all's key names and shapes (``ofa_mbv3_d234_e346_k357_w1.0``)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(key, *shape):
        fan_in = int(np.prod(shape[1:]))
        sd[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5

    def bn(prefix, c, gain=1.0):
        sd[f"{prefix}.weight"] = (torch.rand(c, generator=g) + 0.5) * gain
        sd[f"{prefix}.bias"] = torch.randn(c, generator=g) * 0.2
        sd[f"{prefix}.running_mean"] = torch.randn(c, generator=g) * 0.2
        sd[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    conv("first_conv.conv.weight", 16, 3, 3, 3)
    bn("first_conv.bn", 16)
    conv("blocks.0.conv.depth_conv.conv.weight", 16, 1, 3, 3)
    bn("blocks.0.conv.depth_conv.bn", 16)
    conv("blocks.0.conv.point_linear.conv.weight", 16, 16, 1, 1)
    bn("blocks.0.conv.point_linear.bn", 16)
    in_ch, index = 16, 1
    for width, se in zip(OFA_WIDTHS, OFA_SE):
        for _ in range(4):
            mid = make_divisible(in_ch * 6)
            p = f"blocks.{index}.{'mobile_inverted_conv' if old_names else 'conv'}"
            conv(f"{p}.inverted_bottleneck.conv.conv.weight", mid, in_ch, 1, 1)
            bn(f"{p}.inverted_bottleneck.bn.bn", mid)
            conv(f"{p}.depth_conv.conv.conv.weight", mid, 1, 7, 7)
            for name, n in (("7to5", 25), ("5to3", 9)):
                sd[f"{p}.depth_conv.conv.{name}_matrix"] = torch.eye(n) + torch.randn(n, n, generator=g) * 0.05
            bn(f"{p}.depth_conv.bn.bn", mid)
            if se:
                rd = make_divisible(mid // 4)
                conv(f"{p}.depth_conv.se.fc.reduce.weight", rd, mid, 1, 1)
                sd[f"{p}.depth_conv.se.fc.reduce.bias"] = torch.randn(rd, generator=g) * 0.1
                conv(f"{p}.depth_conv.se.fc.expand.weight", mid, rd, 1, 1)
                sd[f"{p}.depth_conv.se.fc.expand.bias"] = torch.randn(mid, generator=g) * 0.1
            conv(f"{p}.point_linear.conv.conv.weight", width, mid, 1, 1)
            bn(f"{p}.point_linear.bn.bn", width, gain=0.5)  # small residual branches keep 20 blocks in range
            in_ch, index = width, index + 1
    conv("final_expand_layer.conv.weight", 960, 160, 1, 1)
    bn("final_expand_layer.bn", 960)
    conv("feature_mix_layer.conv.weight", 1280, 960, 1, 1)
    conv("classifier.linear.weight", num_classes, 1280)
    sd["classifier.linear.bias"] = torch.randn(num_classes, generator=g) * 0.1
    return sd


def ofa_forward(sd, config, x):
    """Once-for-all's OFAMobileNetV3 forward for ``config`` (eval mode), computed on the raw state dict."""
    def bn(x, p):
        c = x.shape[1]
        return F.batch_norm(x, sd[f"{p}.running_mean"][:c], sd[f"{p}.running_var"][:c], sd[f"{p}.weight"][:c],
                            sd[f"{p}.bias"][:c], False, 0.0, 1e-5)

    x = F.hardswish(bn(F.conv2d(x, sd["first_conv.conv.weight"], stride=2, padding=1), "first_conv.bn"))
    y = F.relu(bn(F.conv2d(x, sd["blocks.0.conv.depth_conv.conv.weight"], padding=1, groups=16),
                  "blocks.0.conv.depth_conv.bn"))
    x = x + bn(F.conv2d(y, sd["blocks.0.conv.point_linear.conv.weight"]), "blocks.0.conv.point_linear.bn")
    for stage, (width, stride, se, relu) in enumerate(zip(OFA_WIDTHS, OFA_STRIDES, OFA_SE, OFA_RELU)):
        act = F.relu if relu else F.hardswish
        for j in range(config[f"d{stage}"]):
            slot = stage * 4 + j
            p, k, in_ch = f"blocks.{slot + 1}.conv", config[f"ks{slot}"], x.shape[1]
            mid = make_divisible(round(in_ch * config[f"e{slot}"]))
            y = act(bn(F.conv2d(x, sd[f"{p}.inverted_bottleneck.conv.conv.weight"][:mid, :in_ch]),
                       f"{p}.inverted_bottleneck.bn.bn"))
            w = sd[f"{p}.depth_conv.conv.conv.weight"][:mid]
            for src, dst in ((7, 5), (5, 3)):  # DynamicSeparableConv2d.get_active_filter
                if src <= k:
                    break
                start = (src - dst) // 2
                w = w[:, :, start:start + dst, start:start + dst].reshape(-1, dst * dst)
                w = F.linear(w, sd[f"{p}.depth_conv.conv.{src}to{dst}_matrix"]).reshape(mid, 1, dst, dst)
            y = act(bn(F.conv2d(y, w, stride=stride if j == 0 else 1, padding=k // 2, groups=mid),
                       f"{p}.depth_conv.bn.bn"))
            if se:
                rd, q = make_divisible(mid // 4), f"{p}.depth_conv.se.fc"
                s = F.relu(F.conv2d(y.mean((2, 3), keepdim=True), sd[f"{q}.reduce.weight"][:rd, :mid],
                                    sd[f"{q}.reduce.bias"][:rd]))
                y = y * F.hardsigmoid(F.conv2d(s, sd[f"{q}.expand.weight"][:mid, :rd], sd[f"{q}.expand.bias"][:mid]))
            y = bn(F.conv2d(y, sd[f"{p}.point_linear.conv.conv.weight"][:, :mid]), f"{p}.point_linear.bn.bn")
            x = x + y if j > 0 else y  # OFA's shortcut: stride 1 and same width, i.e. every block but a stage's first
    x = F.hardswish(bn(F.conv2d(x, sd["final_expand_layer.conv.weight"]), "final_expand_layer.bn"))
    x = F.hardswish(F.conv2d(x.mean((2, 3), keepdim=True), sd["feature_mix_layer.conv.weight"])).flatten(1)
    return F.linear(x, sd["classifier.linear.weight"], sd["classifier.linear.bias"])


@pytest.fixture(scope="module")
def ofa_sd():
    return ofa_state_dict()


@pytest.fixture(scope="module")
def ofa_net(ofa_sd):
    return load_ofa_mbv3(ofa_sd)


def test_ofa_tensors_land_where_they_belong(ofa_sd, ofa_net):
    assert isinstance(ofa_net, OFAMobileNetV3) and not ofa_net.training
    block = ofa_net.blocks[5]  # OFA's blocks.6: stage 40, third block, with SE
    assert torch.equal(block.block.conv_pw.weight, ofa_sd["blocks.6.conv.inverted_bottleneck.conv.conv.weight"])
    assert torch.equal(block.kernel_transforms["7to5"], ofa_sd["blocks.6.conv.depth_conv.conv.7to5_matrix"])
    assert torch.equal(block.kernel_transforms["5to3"], ofa_sd["blocks.6.conv.depth_conv.conv.5to3_matrix"])
    assert torch.equal(block.block.se.conv_expand.bias, ofa_sd["blocks.6.conv.depth_conv.se.fc.expand.bias"])
    assert torch.equal(ofa_net.stem[1].conv_pw.weight, ofa_sd["blocks.0.conv.point_linear.conv.weight"])
    assert torch.equal(ofa_net.classifier[0].weight, ofa_sd["feature_mix_layer.conv.weight"].flatten(1))
    assert not ofa_net.classifier[0].bias.any()


def test_ofa_subnetworks_compute_what_ofa_computes(ofa_sd, ofa_net):
    rng = np.random.default_rng(0)
    configs = [ofa_net.largest_config(), ofa_net.smallest_config()] + [ofa_net.sample(rng) for _ in range(4)]
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    worst = 0.0
    with torch.no_grad():
        for config in configs:
            config = {**config, "r": 128}
            ofa_net.set_active(config)
            expected = ofa_forward(ofa_sd, config, x)
            assert float(expected.std()) > 0.1  # a live network, not one that zeroes everything
            worst = max(worst, float((ofa_net.extract(config)(x) - expected).abs().max()),
                        float((ofa_net(x) - expected).abs().max()))
    assert worst <= 1e-4


def test_ofa_older_names_wrapped_file_and_other_class_count(tmp_path, ofa_sd, ofa_net):
    path = tmp_path / "ofa_mbv3_d234_e346_k357_w1.0"
    old = ofa_state_dict(old_names=True)  # same seed: same tensors under `.mobile_inverted_conv.`
    torch.save({"state_dict": old, "epoch": 180}, path)
    net = load_layout(path, "ofa_mbv3")
    for a, b in zip(net.state_dict().values(), ofa_net.state_dict().values()):
        assert torch.equal(a, b)
    assert net.meta == {"imported_from": str(path), "layout": "ofa_mbv3"}
    # The single-level spellings of static-layer files and no num_batches_tracked are accepted too.
    flat = {k.replace(".bn.bn.", ".bn.").replace(".conv.conv.", ".conv."): v for k, v in ofa_sd.items()
            if not k.endswith("num_batches_tracked")}
    assert torch.equal(load_ofa_mbv3(flat).blocks[3].block.bn3.running_var,
                       ofa_sd["blocks.4.conv.point_linear.bn.bn.running_var"])
    assert load_ofa_mbv3(ofa_state_dict(num_classes=10)).classifier[3].out_features == 10


def timm_model(seed=0):
    """timm's real mobilenetv3_large_100 (random weights, no download) with non-trivial BN statistics and biases."""
    torch.manual_seed(seed)
    model = timm.create_model("mobilenetv3_large_100", pretrained=False)
    g = torch.Generator().manual_seed(seed)
    randomise_batchnorms(model, seed)
    for name, p in model.named_parameters():
        if ("se." in name and name.endswith("bias")) or name == "conv_head.bias":
            p.data += torch.randn(p.shape, generator=g) * 0.1
    # Statistics from data, then moved randomly, keep activations in range through 15 blocks
    # (random statistics alone blow logits up to hundreds, where float32 rounding alone is 1e-3).
    recalibrate_bn(model, [torch.randn(8, 3, 128, 128, generator=g)])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.data += torch.randn(m.num_features, generator=g) * 0.1 * m.running_var.sqrt()
            m.running_var.data *= torch.rand(m.num_features, generator=g) * 0.5 + 0.8
    return model.eval()


@pytest.mark.parametrize("resolution", [128, 224])
def test_timm_weights_make_the_largest_subnetwork_compute_timm(resolution):
    model = timm_model()
    net = load_timm_mobilenetv3(model.state_dict())
    config = {**net.largest_config(), "r": resolution}
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
        net.set_active(config)
        supernet_out, extracted_out = net(x), net.extract(config)(x)
    assert float(expected.std()) > 0.05
    assert float((extracted_out - expected).abs().max()) <= 1e-4
    assert float((supernet_out - expected).abs().max()) <= 1e-4
    # The filling: timm's 5x5 sits in the 7x7 centre, channels past timm's are zero, missing blocks are identities.
    dw = net.blocks[4].block.conv_dw.weight  # timm blocks.2.0: 72 channels, 5x5
    assert torch.equal(dw[:72, :, 1:6, 1:6], model.blocks[2][0].conv_dw.weight)
    assert not dw[72:].any() and not dw[:, :, 0].any()
    assert not net.blocks[3].block.conv_pwl.weight.any()  # stage 24 has 2 blocks in timm: slots 2, 3 are identities
    assert all(torch.equal(m, torch.eye(m.shape[0])) for b in net.blocks for m in b.kernel_transforms.values())


def expect_error(source, *fragments, layout="ofa_mbv3"):
    with pytest.raises(HwnasError) as info:
        load_layout(source, layout)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_mismatching_files_name_the_keys(tmp_path, ofa_sd):
    path = tmp_path / "ofa.pth"
    missing = {k: v for k, v in ofa_sd.items() if k != "blocks.3.conv.depth_conv.conv.5to3_matrix"}
    torch.save(missing, path)
    expect_error(path, str(path), "1 missing: blocks.3.conv.depth_conv.conv.5to3_matrix")
    extra = {**ofa_sd, "feature_mix_layer.conv.bias": torch.zeros(1280)}
    expect_error(extra, "the given state dict", "1 unexpected: feature_mix_layer.conv.bias")
    wrong = {**ofa_sd, "first_conv.conv.weight": torch.zeros(24, 3, 3, 3)}
    expect_error(wrong, "1 of the wrong shape: first_conv.conv.weight (24, 3, 3, 3) (expected (16, 3, 3, 3))")
    # A whole different network: a few keys per kind, then a count.
    message = expect_error(timm_model().state_dict(), "missing: first_conv.conv.weight", "more",
                           "unexpected: conv_stem")
    assert len(message) < 1500
    expect_error(ofa_sd, "not a timm mobilenetv3_large_100 state dict", "unexpected: first_conv.conv.weight",
                 layout="timm_mobilenetv3_large_100")


def test_unreadable_inputs(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(512))
    expect_error(garbage, str(garbage), "not a torch file")
    expect_error(tmp_path / "absent.pt", "no such file")
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    expect_error(listed, "not a state dict")
    expect_error({}, "not a state dict")
    expect_error({"x": torch.zeros(1)}, "unknown weight layout", layout="keras")
