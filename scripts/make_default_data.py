"""Build the embedded Fashion-MNIST subset ``supernets/checkpoints/fmnist_mini.npz``.

Class-balanced, seeded and reproducible: ``train`` (800 per class) and ``val``
(200 per class, disjoint from train) come from the official training set, ``test``
(200 per class) from t10k. Reads the IDX files from ``../shared/data/fashion-mnist``
(or ``$HWNAS_SHARED/data/fashion-mnist``, or ``--source``).

    python scripts/make_default_data.py [--source DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from hwnas.supernets.datasets import EMBEDDED_DATA, read_idx_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWNAS_SHARED", REPO / ".." / "shared"))


def per_class_picks(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> list:
    """For each class, ``per_class`` distinct random indices of that class."""
    return [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SHARED / "data" / "fashion-mnist")
    parser.add_argument("--out", type=Path, default=EMBEDDED_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=800)
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    raw = read_idx_folder(args.source)
    x, y = raw["train"]
    # One draw of train+val per class, then cut it: val can never overlap train.
    per_class = args.train_per_class + args.val_per_class
    picks = per_class_picks(y, per_class, rng)
    train_idx = rng.permutation(np.concatenate([p[: args.train_per_class] for p in picks]))
    val_idx = rng.permutation(np.concatenate([p[args.train_per_class:] for p in picks]))
    xt, yt = raw["t10k"]
    test_idx = rng.permutation(np.concatenate(per_class_picks(yt, args.test_per_class, rng)))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        train_images=x[train_idx], train_labels=y[train_idx].astype(np.int64),
        val_images=x[val_idx], val_labels=y[val_idx].astype(np.int64),
        test_images=xt[test_idx], test_labels=yt[test_idx].astype(np.int64),
        source_indices_train=train_idx, source_indices_val=val_idx, source_indices_test=test_idx,
        seed=np.int64(args.seed),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
          f"train {len(train_idx)}, val {len(val_idx)}, test {len(test_idx)}")


if __name__ == "__main__":
    main()
