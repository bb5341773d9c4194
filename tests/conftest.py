import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWNAS_SHARED", ROOT.parent / "shared"))
BENCH = SHARED / "data" / "hwnas-bench"
FMNIST = SHARED / "data" / "fashion-mnist"


@pytest.fixture(scope="session", autouse=True)
def isolated_device_home(tmp_path_factory):
    """Device profiles of the user running the tests (~/.hwnas) must not change what a test sees."""
    old = os.environ.get("HWNAS_HOME")
    os.environ["HWNAS_HOME"] = str(tmp_path_factory.mktemp("hwnas-home"))
    yield
    if old is None:
        os.environ.pop("HWNAS_HOME", None)
    else:
        os.environ["HWNAS_HOME"] = old


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty user device registry for one test (the real ~/.hwnas is never touched); its devices folder.
    Files whose every test needs it mark themselves ``pytestmark = pytest.mark.usefixtures("home")``."""
    monkeypatch.setenv("HWNAS_HOME", str(tmp_path / "hwnas"))
    return tmp_path / "hwnas" / "devices"


@pytest.fixture(scope="session")
def tiny_mbv3(tmp_path_factory) -> Path:
    """A small elastic_mbv3 checkpoint (2 kernels, 2 expand ratios, 2 resolutions): its lookup tables, plain and
    compressed, are measured in seconds."""
    from hwnas import supernets

    net = supernets.create("elastic_mbv3", stage_widths=(8, 16), stage_strides=(1, 2), stage_se=(False, True),
                           min_depth=1, max_depth=2, kernel_sizes=(3, 5), expand_ratios=(2, 3),
                           resolutions=(12, 16), stem_width=8, head_width=32)
    return supernets.save_checkpoint(net, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session: ray.init costs seconds and ~650 MB."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def requires(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (shared data not beside the project)")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models run fastest single-threaded, and a shared CPU makes OpenMP threads spin."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def assert_extract_is_independent(net, config, x):
    """The extracted sub-network shares no memory with the supernet: mutating the supernet leaves it alone."""
    import torch

    sub = net.extract(config)
    with torch.no_grad():
        before = sub(x)
        net_ptrs = {t.data_ptr() for t in net.state_dict().values()}
        assert not net_ptrs & {t.data_ptr() for t in sub.state_dict().values()}
        backup = {k: v.clone() for k, v in net.state_dict().items()}
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.add_(1.0)
        net.set_active(config)
        changed = net(x)
        after = sub(x)
        net.load_state_dict(backup)
    assert not torch.allclose(changed, before)  # the mutation did reach the supernet
    torch.testing.assert_close(before, after, rtol=0, atol=0)


def max_parity_error(net, configs, x) -> float:
    """Largest |supernet(x) - extract(config)(x)| over ``configs`` (eval mode is the caller's)."""
    import torch

    worst = 0.0
    with torch.no_grad():
        for config in configs:
            net.set_active(config)
            worst = max(worst, float((net(x) - net.extract(config)(x)).abs().max()))
    return worst


def randomise_batchnorms(net, seed: int = 0):
    """Non-trivial BN affine and running stats, so parity tests exercise every slice."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.2
            m.running_mean.data = torch.randn(c, generator=g) * 0.2
            m.running_var.data = torch.rand(c, generator=g) + 0.5
    for name, p in net.named_parameters():
        if "kernel_transforms" in name:  # move the transforms away from identity
            p.data += torch.randn(p.shape, generator=g) * 0.1
    return net
