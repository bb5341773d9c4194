"""Compression on the runtime people deploy with: int8 and pruning vs fp32, timed side by side in onnxruntime.

    python benchmarks/compression.py [--run RUN_DIR] [--resnet-epochs 2]

Every latency is onnxruntime CPU (1 thread, batch 32), the models of one table timed interleaved
in one process (benchmarks/devices_lut.py: ratios measured side by side survive a shared machine's
drift, absolute figures do not). Models are built by ``hwnas.supernets.materialize`` from configs
with ``prune.*`` / ``quant.*`` keys, exactly as a search measures them; accuracy is on the 2,000-image
test split of fmnist-mini (int8: the onnxruntime QDQ model itself).

* elastic ResNet: the shipped code has no trained ResNet checkpoint, so one is trained here for
  ``--resnet-epochs`` epochs (largest and smallest sub-network per step) on fmnist-mini; latency does
  not depend on the weights.
* elastic MobileNetV3: the shipped default checkpoint; also each unit in int8 alone, to show where
  int8 is faster and where it is slower (the search's question).
* ``--run``: a finished joint search (e.g. of experiments/quickstart.yaml): its largest fp32
  sub-network and the fastest front member within 1 point of its accuracy, re-timed side by side.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from common import write_section

from hwnas import supernets
from hwnas.devices.backends import time_interleaved
from hwnas.devices.onnx import session, to_onnx
from hwnas.modelstats import count_flops, count_params
from hwnas.supernets import load_dataset, materialize, measure_accuracy

BATCH, CALIB = 32, 500
TIMING = dict(warmup=5, repeats=30, max_repeats=90, per_round=3, statistic="min")


def timed(models, shape, batch=BATCH):
    """Latency (ms, min of interleaved rounds) of each model's deployed ONNX in onnxruntime, side by side."""
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    feeds = {"input": x.numpy()}
    sessions = [session(to_onnx(m, x), threads=1) for m in models]
    return [m.latency_ms for m in time_interleaved([lambda s=s: s.run(None, feeds) for s in sessions], **TIMING)]


class DynamicBatch(torch.nn.Module):
    """An fp32 model exported with a dynamic batch axis, as quantized models are (is that axis free?)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def deployed_onnx(self, example):
        return to_onnx(self.model, example[:1], dynamic_batch=True)


def describe_models(net, configs, data):
    models = [materialize(net, c, data.train[0], CALIB, 0) for c in configs]
    acc = [measure_accuracy(m, *data.test) for m in models]
    counted = [getattr(m, "model", m) for m in models]
    params = [count_params(m) for m in counted]
    macs = [count_flops(m, data.input_shape) / 2 for m in counted]
    return models, acc, params, macs


def compare(net, data, label):
    largest = net.largest_config()
    units = net.compression_unit_names()
    stages = {f"prune.stage{i}": 0.5 for i in range(net.num_stages)}
    int8 = {f"quant.{u}": "int8" for u in units}
    variants = {"fp32": largest, "int8 (every unit)": {**largest, **int8},
                "pruned to half, fp32": {**largest, **stages}, "pruned to half, int8": {**largest, **stages, **int8}}
    models, acc, params, macs = describe_models(net, list(variants.values()), data)
    lat = timed(models + [DynamicBatch(models[0])], data.input_shape)
    dynamic = lat.pop()
    rows = [f"| {name} | {a * 100:.2f} | {p:,} | {m / 1e6:.2f} | {t:.2f} | {lat[0] / t:.2f}x |"
            for name, a, p, m, t in zip(variants, acc, params, macs, lat)]
    table = "\n".join([f"**{label}**, largest sub-network:", "",
                       "| variant | test accuracy % | params | MMACs | latency ms | speed-up vs fp32 |",
                       "|---|---|---|---|---|---|"] + rows
                      + ["", f"(fp32 exported with a dynamic batch axis, as the int8 models are: {dynamic:.2f} ms, "
                             f"{lat[0] / dynamic:.2f}x the static export's speed.)"])
    return table, dict(zip(variants, zip(acc, lat)))


def per_unit(net, data):
    """Each unit in int8 alone vs all fp32: where int8 pays on this CPU (side by side)."""
    largest = net.largest_config()
    units = net.compression_unit_names()
    configs = [largest] + [{**largest, f"quant.{u}": "int8"} for u in units]
    models = [materialize(net, c, data.train[0], 128, 0) for c in configs]
    lat = timed(models, data.input_shape)
    cells = [f"| {u} | {lat[0] - t:+.2f} | {'int8 faster' if t < lat[0] else 'int8 slower'} |"
             for u, t in zip(units, lat[1:])]
    return "\n".join(["| unit in int8 (the rest fp32) | ms saved vs all-fp32 | |", "|---|---|---|"] + cells)


def from_run(run_dir: Path):
    from hwnas.pipeline import load_run_config

    # The run's own file as the run read it (its paths resolved from where the experiment file was).
    cfg = load_run_config(run_dir).model_dump(mode="json")
    data = load_dataset(cfg["data"])  # BN recalibration and int8 calibration on the run's own data
    space = cfg["space"]
    net = supernets.load_checkpoint(supernets.checkpoint_path(space.get("checkpoint", "default")))
    with open(run_dir / "candidates.csv") as f:
        cands = list(csv.DictReader(f))
    with open(run_dir / "front.csv") as f:
        front = list(csv.DictReader(f))
    from hwnas.dimensions import JointSpace

    joint = JointSpace(net, space["dimensions"], {d: space[d] for d in space["dimensions"] if d in space})
    def config(row):  # one column per search variable (older runs: a JSON "config" column)
        if "config" in row:
            return json.loads(row["config"])
        return {v.name: next(o for o in v.options if str(o) == row[v.name]) for v in joint.space.variables}

    largest = joint.space.decode(joint.space.largest())
    ref = next(c for c in cands if config(c) == largest)
    ref_acc = float(ref["accuracy"])
    close = [r for r in front if float(r["accuracy"]) >= ref_acc - 0.01]
    if not close:
        return f"No front member of {run_dir} lies within 1 point of the largest fp32 sub-network ({ref_acc:.4f})."
    fastest = min(close, key=lambda r: float(r["latency_ms"]))
    configs = [config(ref), config(fastest)]
    models = [materialize(net, c, data.train[0], CALIB, 0) for c in configs]
    batch = cfg.get("devices", [{}])[0].get("batch_size", 1)
    lat = timed(models, data.input_shape, batch)
    return "\n".join([
        f"From the run `{run_dir}` ({len(cands)} candidates, {len(front)} on the front; validation accuracy "
        f"as the run measured it), re-timed side by side (batch {batch}, as the run timed them):", "",
        "| sub-network | val accuracy % | latency ms (run) | latency ms (side by side) |", "|---|---|---|---|",
        f"| largest fp32 `{ref['arch']}` | {ref_acc * 100:.2f} | {float(ref['latency_ms']):.2f} | {lat[0]:.2f} |",
        f"| fastest front member within 1 point `{fastest['arch']}` | {float(fastest['accuracy']) * 100:.2f} | "
        f"{float(fastest['latency_ms']):.2f} | {lat[1]:.2f} |", "",
        f"Speed-up: **{lat[0] / lat[1]:.2f}x** (target ≥ 2x) at {100 * (ref_acc - float(fastest['accuracy'])):.2f} "
        f"points of accuracy."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished joint search run folder")
    parser.add_argument("--resnet-epochs", type=int, default=1, help="0: random weights (latency only)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("fmnist-mini")

    torch.manual_seed(0)
    resnet = supernets.create("elastic_resnet")
    label = (f"elastic ResNet (trained here, {args.resnet_epochs} epoch(s))" if args.resnet_epochs
             else "elastic ResNet (random weights: latency only, its accuracy is chance)")
    # Largest and smallest per step only (no random sub-networks): the figures below use the largest.
    if args.resnet_epochs:
        supernets.train_supernet(resnet, data, supernets.TrainSettings(epochs=args.resnet_epochs, progress=False,
                                                                       eval_every=0, threads=2, num_random=0))
    torch.set_num_threads(1)
    resnet_table, resnet_fig = compare(resnet.eval(), data, label)
    mbv3 = supernets.load_default()
    mbv3_table, mbv3_fig = compare(mbv3, data, "elastic MobileNetV3 (shipped default checkpoint)")
    units = per_unit(mbv3, data)
    run_part = from_run(args.run) if args.run else "(no `--run` given: the front comparison was not made)"

    def ratio(fig, a, b):
        return fig[a][1] / fig[b][1]

    def drop(fig, a, b):
        return 100 * (fig[a][0] - fig[b][0])

    resnet_drop = (f"at {drop(resnet_fig, 'fp32', 'int8 (every unit)'):+.2f} points" if args.resnet_epochs
                   else "(accuracy not measured: random weights)")

    summary = "\n".join([
        "| figure | value | target |", "|---|---|---|",
        f"| elastic ResNet: int8 speed-up over fp32 (largest) | {ratio(resnet_fig, 'fp32', 'int8 (every unit)'):.2f}x "
        f"{resnet_drop} | ≥ 1.4x at ≤ 1 point |",
        f"| elastic ResNet: pruning half the inner channels, speed-up | "
        f"{ratio(resnet_fig, 'fp32', 'pruned to half, fp32'):.2f}x | ≥ 1.5x |",
        f"| elastic MobileNetV3: int8 speed-up over fp32 (largest) | "
        f"{ratio(mbv3_fig, 'fp32', 'int8 (every unit)'):.2f}x at {drop(mbv3_fig, 'fp32', 'int8 (every unit)'):+.2f} "
        f"points | (int8 is not always faster) |",
        f"| elastic MobileNetV3: pruning half the inner channels, speed-up | "
        f"{ratio(mbv3_fig, 'fp32', 'pruned to half, fp32'):.2f}x | ≥ 1.5x |",
    ])
    body = "\n\n".join([
        "onnxruntime CPU, 1 thread, batch 32, static QDQ int8 after onnxruntime's quant_pre_process (per-channel int8 weights, uint8 min-max activations on "
        f"{128} calibration images), pruning = per-stage keep ratio of each block's inner channels (L1-ranked, "
        "BN recalibrated on 500 training images). Latency: minimum of interleaved rounds, the models of a "
        "table timed side by side.",
        summary, resnet_table, mbv3_table,
        "Which MobileNetV3 units gain from int8 on this CPU (each alone in int8, timed side by side with the "
        "all-fp32 network):", units, "**Front vs largest**", run_part])
    write_section("compression", "Compression: int8 and pruning in onnxruntime (benchmarks/compression.py)", body)
    print(body)


if __name__ == "__main__":
    main()
