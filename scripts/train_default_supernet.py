"""Train the shipped default supernet on the embedded ``fmnist-mini`` data.

Writes ``supernets/checkpoints/default_mbv3.pt`` (and ``default_mbv3.json``, the
measured report), then prints: val accuracy of the largest, the smallest and 20
random sub-networks, CPU latency (batch 32, 28x28) of largest vs smallest, and the
training wall time.

    python scripts/train_default_supernet.py [--epochs N] [--state PATH] [--threads 2]

Training state is saved every epoch to ``--state`` (default: a file next to the
output); rerunning the same command resumes from it.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

# Idle OpenMP threads must sleep, not spin: on a shared CPU spinning makes 2 threads ~10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from hwnas import supernets  # noqa: E402
from hwnas.supernets.datasets import load_dataset
from hwnas.supernets.report import tradeoff_report
from hwnas.supernets.train import TrainSettings, train_supernet

# The default architecture: small enough to train in minutes on 2 CPU cores, wide and
# deep enough that the largest and smallest sub-networks differ clearly in accuracy
# and latency.
DEFAULT_KWARGS = dict(
    num_classes=10, in_chans=1, stem_width=16, stem_stride=2, stage_widths=(16, 24, 32), stage_strides=(2, 1, 1),
    stage_se=(False, True, True), min_depth=2, max_depth=4, kernel_sizes=(3, 5, 7), expand_ratios=(3, 4, 6),
    resolutions=(16, 20, 24, 28), head_width=128, act_layer="hard_swish", kernel_transform=True, dropout=0.1,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=14)  # the shipped default was trained for 14
    parser.add_argument("--optimizer", default=TrainSettings.optimizer, choices=["sgd", "adamw"])
    parser.add_argument("--lr", type=float, default=TrainSettings.lr)
    parser.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    parser.add_argument("--augment", action="store_true", help="random flips and shifts")
    parser.add_argument("--progressive", action="store_true", help="OFA progressive shrinking")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=supernets.DEFAULT_CHECKPOINT)
    parser.add_argument("--state", type=Path, default=None,
                        help="training state file, saved every epoch and resumed from (default: <out>.state; "
                             "deleted after a finished run unless --keep-state)")
    parser.add_argument("--keep-state", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(args.seed)  # the initial weights
    data = load_dataset("fmnist-mini")
    net = supernets.create("elastic_mbv3", **DEFAULT_KWARGS)
    settings = TrainSettings(epochs=args.epochs, optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size,
                             augment=args.augment, progressive=args.progressive, seed=args.seed,
                             threads=args.threads, progress=not args.no_progress)
    state = args.state or args.out.with_suffix(".state")
    result = train_supernet(net, data, settings, state_path=state)
    train_seconds = sum(r["seconds"] for r in result.history)

    torch.set_num_threads(args.threads)
    report = tradeoff_report(net, data)
    report["train_wall_seconds"] = train_seconds
    meta = {"dataset": data.name, "train_images": len(data.train[0]), "settings": asdict(settings),
            "train_wall_seconds": train_seconds, "history": result.history,
            "torch": str(torch.__version__), "report": report}
    supernets.save_checkpoint(net, args.out, meta)
    args.out.with_suffix(".json").write_text(json.dumps({"kwargs": DEFAULT_KWARGS, **meta}, indent=2) + "\n")
    if not args.keep_state:
        state.unlink(missing_ok=True)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); training took {train_seconds:.0f} s")


if __name__ == "__main__":
    main()
