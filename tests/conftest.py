import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWNAS_SHARED", ROOT.parent / "shared"))
BENCH = SHARED / "data" / "hwnas-bench"
FMNIST = SHARED / "data" / "fashion-mnist"


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
