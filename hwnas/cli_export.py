"""``hwnas export RUN ...`` and ``hwnas evaluate RUN ...``: chosen sub-networks of a run folder.

The logic is in :mod:`hwnas.export`; user errors raise :class:`hwnas.errors.HwnasError`, which
``hwnas.cli.main`` prints as one line with exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path



def _selection(args) -> dict:
    return dict(pick=args.pick, rank=args.rank, by=args.by, front=args.front)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def cmd_export(args) -> int:
    from .export import export, parse_formats

    formats = parse_formats(args.format)
    _threads(args.threads)
    done = export(args.run_dir, args.out, formats, force=args.force, name=args.name,
                  parity_images=args.parity_images, measure=args.measure, device=args.device,
                  evaluate=args.evaluate, threads=args.threads, log=lambda s: print(s, file=sys.stderr),
                  **_selection(args))
    for item in done:
        info, c = item.info, item.info["candidate"]
        parity = info["parity"]["formats"]
        where = f"rank {c['rank']} by {c['rank_by']}" if c["on_front"] else "not on the front"
        files = ", ".join(
            f"{f['file']} (max |diff| {parity[fmt]['max_abs_diff']:.1e}, top-1 {parity[fmt]['top1_agreement'] * 100:.2f} %)"
            for fmt, f in info["files"].items() if f["requested"] or fmt == "state_dict")
        print(f"exported candidate {c['id']} ({where}, {c['arch']}) to {item.folder}/: {files}; "
              f"parity on {info['parity']['images']} val images; card {item.folder / 'model_card.md'}")
    return 0


def cmd_evaluate(args) -> int:
    from .export import evaluate

    _threads(args.threads)
    rows = evaluate(args.run_dir, split=args.split, **_selection(args))
    for r in rows:
        run = (f"; the run measured {r['run_accuracy']:.4f} on {r['run_split']}" if r["run_accuracy"] is not None
               else "")
        where = f"rank {r['rank']} by {r['rank_by']}" if r["rank"] else "not on the front"
        print(f"candidate {r['id']} ({where}, {r['arch']}): {r['split']} accuracy {r['accuracy']:.4f} "
              f"on {r['images']} images{run}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _add_selection(p) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--pick", metavar="ID", help="a candidate id (the 'id' column of the run's CSVs) or its "
                                                    "architecture string ('arch' column)")
    group.add_argument("--rank", type=int, metavar="N", help="the N-th best front member (1 = best) by --by")
    group.add_argument("--front", action="store_true", help="every front member")
    p.add_argument("--by", metavar="METRIC", help="rank the front by this metric (default: the first objective); "
                                                  "ties go by the other objectives in the file's order")
    p.add_argument("--threads", type=int, default=2, help="torch threads for rebuilding and checking (default 2)")


def register(sub) -> None:
    from .export import FORMATS

    p = sub.add_parser("export", help="export chosen sub-networks of a run folder (ONNX, int8 ONNX, pt2, "
                                      "TorchScript, state dict), parity-checked, with a model card")
    p.add_argument("run_dir")
    _add_selection(p)
    p.add_argument("--format", default="onnx", help=f"comma-separated: {','.join(FORMATS)} (default onnx; the "
                                                    f"state dict that hwnas.load reads is always written)")
    p.add_argument("--out", required=True, help="the folder to write (must not exist or be empty, unless --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--name", default="model", help="file name stem (default model: model.onnx, model.pt2, ...)")
    p.add_argument("--parity-images", type=int, default=2000,
                   help="validation images the parity check compares on (default 2000; 0: the whole split)")
    p.add_argument("--measure", action="store_true", help="time each written file on this machine as --device "
                                                          "times it, into the card")
    p.add_argument("--device", help="with --measure: a device of the run (default its first)")
    p.add_argument("--evaluate", action="store_true", help="test-split accuracy of each written file, into the card")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="accuracy of chosen sub-networks of a run, rebuilt as searched, on a split")
    p.add_argument("run_dir")
    _add_selection(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", help="write the results to this JSON file")
    p.set_defaults(func=cmd_evaluate)
