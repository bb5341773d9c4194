"""``hwnas supernets list``, ``hwnas supernet train CONFIG``, ``eval CHECKPOINT`` and ``import FILE``."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .config import read_yaml, resolve_paths, validate_model
from .errors import ConfigError, HwnasError
from .registry import NamesHelp
from .rundir import check_output_path


class TrainConfig(BaseModel):
    """The supernet training file (see docs/CONFIG.md)."""

    model_config = ConfigDict(extra="forbid")
    supernet: str = "elastic_mbv3"
    kwargs: Dict[str, Any] = {}
    data: Union[str, Dict[str, Any]] = "fmnist-mini"  # as an experiment's data (docs/CONFIG.md)
    settings: Dict[str, Any] = {}
    init_seed: int = Field(default=0, ge=0)
    train_images: int = Field(default=0, ge=0)  # a seeded subset of the training split (0: all of it)
    out: str = Field(min_length=1)

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, value):
        from hwnas.supernets.train import TrainSettings

        allowed = [f.name for f in fields(TrainSettings)]
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise ValueError(f"settings.{unknown[0]}: unknown setting; allowed: {', '.join(allowed)}")
        return value


def load_train_config(path: Path) -> TrainConfig:
    # The data folder is relative to the file (as in an experiment file); ``out`` to the current directory.
    raw = resolve_paths(read_yaml(path), Path(path).parent)
    return validate_model(TrainConfig, raw, path, "supernet, kwargs, data, settings, out")


def cmd_list(args) -> int:
    from hwnas.supernets import SHIPPED_CHECKPOINTS, load_checkpoint_header, names

    print("\n".join(names()))
    shipped = [(n, p) for n, p in SHIPPED_CHECKPOINTS.items() if p.is_file()]
    if shipped:
        print("\nshipped checkpoints (space.checkpoint, or CHECKPOINT of 'hwnas supernet eval'):")
        for name, path in shipped:
            print(f"  {name:12s} {load_checkpoint_header(path)[0]:14s} {path.name}")
    return 0


def cmd_train(args) -> int:
    import torch

    from hwnas import supernets
    from hwnas.supernets.datasets import load_dataset
    from hwnas.supernets.train import TrainSettings, train_supernet

    path = Path(args.config)
    cfg = load_train_config(path)
    try:
        settings = TrainSettings(**{**cfg.settings, "progress": not args.quiet})
    except TypeError as exc:
        raise ConfigError(path, "settings", str(exc)) from None
    torch.manual_seed(cfg.init_seed)
    try:
        net = supernets.create(cfg.supernet, **cfg.kwargs)
    except TypeError as exc:
        raise ConfigError(path, "kwargs", f"{exc}") from None
    data = load_dataset(cfg.data)
    if 0 < cfg.train_images < len(data.train[1]):
        keep = torch.randperm(len(data.train[1]), generator=torch.Generator().manual_seed(cfg.init_seed))
        X, y = data.train
        data = dataclasses.replace(data, train=(X[keep[: cfg.train_images]], y[keep[: cfg.train_images]]))
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = out.with_suffix(".state")
    result = train_supernet(net, data, settings, state_path=state, resume=not args.restart)
    meta = {"dataset": data.name, "data": cfg.data, "train_images": len(data.train[0]),
            "preprocessing": data.preprocessing.as_dict() if data.preprocessing else None, "settings": asdict(settings),
            "train_wall_seconds": sum(r["seconds"] for r in result.history), "history": result.history,
            "torch": str(torch.__version__)}
    supernets.save_checkpoint(net, out, meta)
    last = result.history[-1] if result.history else {}
    print(f"wrote {out}: {len(result.history)} epochs"
          + (f" (resumed from epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else "")
          + (f", val largest {last['val_largest']:.4f}, smallest {last['val_smallest']:.4f}" if "val_largest" in last
             else ""))
    return 0


def parse_config_list(spec: str, net, seed: int) -> List[tuple]:
    """``largest,smallest,random:20,ARCH`` -> [(label, config), ...] (random ones seeded; ARCH: an
    architecture string as the run files print it, e.g. ``ks=...;e=...;d=...;r=28``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i, part in enumerate([p.strip() for p in spec.split(",") if p.strip()]):
        name, _, count = part.partition(":")
        if name == "largest" and not count:
            out.append(("largest", net.largest_config()))
        elif name == "smallest" and not count:
            out.append(("smallest", net.smallest_config()))
        elif name == "random" and count.isdigit() and int(count) > 0:
            out += [(f"random-{i}", net.sample(rng)) for i in range(int(count))]
        elif "=" in part:
            try:
                out.append((f"arch-{i}", net.parse(part)))
            except HwnasError as err:
                raise HwnasError(f"--configs: {part!r}: {err}") from None
        else:
            raise HwnasError(f"--configs: {part!r} is not one of largest, smallest, random:N (N >= 1) or an "
                             f"architecture string (as the run files print it, e.g. {net.describe(net.smallest_config())})")
    if not out:
        raise HwnasError("--configs: give at least one of largest, smallest, random:N or an architecture string")
    return out


def cmd_eval(args) -> int:
    import numpy as np
    import torch

    from hwnas.supernets import checkpoint_path, load_checkpoint, subnet_accuracy
    from hwnas.supernets.datasets import load_dataset

    if args.threads < 1:
        raise HwnasError(f"--threads: {args.threads} is not allowed; allowed: an integer >= 1")
    if args.calib_images < 0:
        raise HwnasError(f"--calib-images: {args.calib_images} is not allowed; allowed: an integer >= 0")
    if args.json:
        check_output_path(Path(args.json), "--json", folder=False)
    torch.set_num_threads(args.threads)
    net = load_checkpoint(checkpoint_path(args.checkpoint))
    data = load_dataset(args.data)
    results = []
    for label, config in parse_config_list(args.configs, net, args.seed):
        acc = subnet_accuracy(net, config, data, split=args.split, calib_images=args.calib_images, seed=args.seed)
        results.append({"label": label, "arch": net.describe(config), "config": config, "accuracy": acc})
        print(f"{label:>10}  {acc * 100:6.2f} %  {net.describe(config)}")
    randoms = [r["accuracy"] for r in results if r["label"].startswith("random")]
    summary = {"checkpoint": str(args.checkpoint), "data": args.data, "split": args.split,
               "calib_images": args.calib_images, "configs": results}
    if randoms:
        summary["random"] = {"min": float(np.min(randoms)), "median": float(np.median(randoms)),
                             "max": float(np.max(randoms)), "n": len(randoms)}
        print(f"random ({len(randoms)}): min {summary['random']['min'] * 100:.2f} %, median "
              f"{summary['random']['median'] * 100:.2f} %, max {summary['random']['max'] * 100:.2f} %")
    if args.json:
        out = Path(args.json)
        partial = out.with_name(f".{out.name}.partial")
        try:  # write then rename: no half-written file under the name
            partial.write_text(json.dumps(summary, indent=2, default=str) + "\n")
            os.replace(partial, out)
        except OSError as err:
            raise HwnasError(f"--json: cannot write {out}: {err.strerror or err}") from None
        finally:
            partial.unlink(missing_ok=True)
    return 0


def cmd_import(args) -> int:
    from hwnas import supernets
    from hwnas.supernets.loaders import load_layout

    net = load_layout(Path(args.file), args.layout)  # a bad file stops here, before anything is written
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:  # write then rename: an interrupted import never leaves a truncated checkpoint under `out`
        supernets.save_checkpoint(net, partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {out}: supernet {net.registry_name} from {args.file} ({args.layout} layout); "
          f"use it as space: {{supernet: {net.registry_name}, checkpoint: {out}}}")
    return 0


def _data_kinds():
    from hwnas.supernets.datasets import KINDS

    return list(KINDS)


def register(sub) -> None:
    p = sub.add_parser("supernets", help="registered supernets")
    s = p.add_subparsers(dest="subcommand", required=True)
    s.add_parser("list", help="list registered supernets").set_defaults(func=cmd_list)

    p = sub.add_parser("supernet", help="train, evaluate or import a supernet")
    s = p.add_subparsers(dest="subcommand", required=True)
    t = s.add_parser("train", help="train a supernet from a YAML file (sandwich rule, in-place distillation)")
    t.add_argument("config")
    t.add_argument("--restart", action="store_true", help="ignore an existing training state and start over")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)
    e = s.add_parser("eval", help="accuracy of sub-networks after BN recalibration")
    e.add_argument("checkpoint", help="a checkpoint file, or a shipped one by name: default, fmnist_mbv3")
    e.add_argument("--data", default="fmnist-mini", help=NamesHelp("KIND or KIND:PATH; kinds: {names}", _data_kinds))
    e.add_argument("--configs", default="largest,smallest,random:20",
                   help="comma-separated: largest, smallest, random:N, or architecture strings as the run files "
                        "print them (ks=...;e=...;d=...;r=...)")
    e.add_argument("--split", default="test", choices=["val", "test"])
    e.add_argument("--calib-images", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--json", help="write the results to this JSON file")
    e.set_defaults(func=cmd_eval)
    i = s.add_parser("import", help="convert local once-for-all or timm MobileNetV3 weights into a supernet checkpoint")
    i.add_argument("file", help="a torch file holding the state dict (bare or as {'state_dict': ...})")
    i.add_argument("--layout", required=True,
                   help="ofa_mbv3 (once-for-all's ofa_mbv3_d234_e346_k357_w1.0) | timm_mobilenetv3_large_100 "
                        "(into the largest sub-network)")
    i.add_argument("--out", required=True, help="the checkpoint to write")
    i.set_defaults(func=cmd_import)
