"""Accuracy spread and CPU latency of a supernet's sub-networks (BN recalibrated per sub-network).

    python benchmarks/supernets.py [--checkpoint PATH] [--data fmnist-mini] [--random 20]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from common import write_section  # noqa: E402
from hwnas import supernets  # noqa: E402
from hwnas.supernets.datasets import load_dataset  # noqa: E402
from hwnas.supernets.report import tradeoff_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(supernets.DEFAULT_CHECKPOINT))
    parser.add_argument("--data", default="fmnist-mini")
    parser.add_argument("--random", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    net = supernets.load_checkpoint(args.checkpoint)
    r = tradeoff_report(net, load_dataset(args.data), n_random=args.random)
    rnd, lat = r[f"val_acc_random{args.random}"], r["cpu_latency_ms_batch32"]
    train_s = net.meta.get("train_wall_seconds")
    name = "the shipped default" if args.checkpoint == str(supernets.DEFAULT_CHECKPOINT) else f"`{args.checkpoint}`"
    body = f"""
Supernet {name} (`{net.registry_name}`), data `{args.data}`; accuracy after BN recalibration on 1000
training images; latency: torch CPU, batch 32, {lat['threads']} threads, median.

| figure | largest (`{r['arch_key_largest']}`) | smallest (`{r['arch_key_smallest']}`) |
|---|---|---|
| val accuracy | {r['val_acc_largest'] * 100:.2f} % | {r['val_acc_smallest'] * 100:.2f} % |
| test accuracy | {r['test_acc_largest'] * 100:.2f} % | {r['test_acc_smallest'] * 100:.2f} % |
| CPU latency, batch 32 | {lat['largest']:.1f} ms | {lat['smallest']:.1f} ms (ratio {lat['ratio']:.2f}) |

{args.random} random sub-networks, val accuracy: min {rnd['min'] * 100:.2f} %, median {rnd['median'] * 100:.2f} %,
max {rnd['max'] * 100:.2f} %. Training wall time recorded in the checkpoint: {f'{train_s:.0f} s' if train_s else 'n/a'}.
"""
    write_section("supernets", f"Supernet trade-off: {net.registry_name} on {args.data}", body)
    print(body)
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
