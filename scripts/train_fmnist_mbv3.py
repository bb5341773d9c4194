"""Train the Fashion-MNIST elastic MobileNetV3 supernet on the full training split (55000 images).

Reads the IDX files from ``../shared/data/fashion-mnist`` (or ``$HWNAS_SHARED/data/
fashion-mnist``, or ``--data``); writes ``supernets/checkpoints/fmnist_mbv3.pt`` (shipped,
~2 MB) and a JSON report beside it like the default script's. Resumable: rerunning
continues from the per-epoch training state in ``runs/fmnist_mbv3/``. ``--time-steps K``
only times K training steps and prints the estimated epoch time (nothing is written).

    python scripts/train_fmnist_mbv3.py [--epochs 7] [--threads 2] [--time-steps 10]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_default_supernet.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hwnas import supernets  # noqa: E402
from hwnas.supernets.report import tradeoff_report  # noqa: E402
from hwnas.supernets.train import TrainSettings, augment_batch, sandwich_step, train_supernet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWNAS_SHARED", REPO / ".." / "shared"))

# Wider than the embedded default and its first stage at 14x14 instead of 7x7 (fine texture
# matters on Fashion-MNIST); sized so an epoch takes ~15-20 min on 2 CPU cores.
FMNIST_KWARGS = dict(
    num_classes=10, in_chans=1, stem_width=16, stem_stride=2, stage_widths=(16, 32, 48),
    stage_strides=(1, 2, 1), stage_se=(False, True, True), min_depth=2, max_depth=4,
    kernel_sizes=(3, 5, 7), expand_ratios=(3, 4, 6), resolutions=(16, 20, 24, 28), head_width=256,
    act_layer="hard_swish", kernel_transform=True, dropout=0.1,
)


def time_steps(net: supernets.Supernet, data, settings: TrainSettings, steps: int) -> float:
    """Seconds per sandwich training step, measured on ``steps`` real steps (weights are changed)."""
    torch.set_num_threads(settings.threads)
    opt = torch.optim.SGD(net.parameters(), lr=settings.lr, momentum=settings.momentum)
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    net.train().to(memory_format=torch.channels_last)
    X, Y = data.train
    times = []
    for _ in range(steps + 1):  # the first step pays one-off costs
        idx = torch.randint(0, len(X), (settings.batch_size,), generator=gen)
        x = augment_batch(X[idx], gen).contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        opt.zero_grad()
        sandwich_step(net, x, Y[idx], rng, None, settings)
        opt.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "fashion-mnist")
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--num-random", type=int, default=1, help="random sub-networks per step besides the ends")
    parser.add_argument("--progressive", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "supernets" / "checkpoints" / "fmnist_mbv3.pt")
    parser.add_argument("--state", type=Path, default=REPO / "runs" / "fmnist_mbv3" / "train.state")
    parser.add_argument("--time-steps", type=int, default=0, help="only time this many steps and estimate an epoch")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = supernets.load_dataset(f"fashion-mnist:{args.data}")
    net = supernets.create("elastic_mbv3", **FMNIST_KWARGS)
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             progressive=args.progressive, seed=args.seed, threads=args.threads,
                             num_random=args.num_random)
    if args.time_steps:
        per_step = time_steps(net, data, settings, args.time_steps)
        steps = math.ceil(len(data.train[0]) / settings.batch_size)
        print(f"{per_step:.2f} s per step x {steps} steps = {per_step * steps / 60:.1f} min per epoch "
              f"({args.threads} threads, batch {settings.batch_size})")
        return

    result = train_supernet(net, data, settings, state_path=args.state)
    torch.set_num_threads(args.threads)
    report = tradeoff_report(net, data)
    meta = {"dataset": data.name, "train_images": len(data.train[0]), "settings": asdict(settings),
            "train_wall_seconds": sum(r["seconds"] for r in result.history), "history": result.history,
            "report": report}
    supernets.save_checkpoint(net, args.out, meta)
    args.out.with_suffix(".json").write_text(json.dumps({"kwargs": FMNIST_KWARGS, **meta}, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
