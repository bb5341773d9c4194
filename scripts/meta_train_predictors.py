"""Meta-train the shipped few-shot cost predictors on every device of each benchmark table.

    python scripts/meta_train_predictors.py [--data DIR] [--spaces nb201,fbnet,ofa_mbv3] [--out DIR]

Writes ``<out>/<space>.npz`` (default ``predictors/artifacts/``), read back by
``hwnas.predictors.fewshot.load_pretrained(space)``. Each device is trained on HELP's
meta-training pool; seeded and single-threaded, so reruns give the same files' weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.predictors.fewshot import ARTIFACT_DIR, FewShotPredictor
from hwnas.tabular import TABLE_FILES, TabularBenchmark, default_data_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the benchmark tables")
    parser.add_argument("--spaces", default=",".join(TABLE_FILES))
    parser.add_argument("--out", type=Path, default=ARTIFACT_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = args.data or default_data_dir()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for space in [s.strip() for s in args.spaces.split(",") if s.strip()]:
            if space not in TABLE_FILES:
                raise HwnasError(f"unknown space {space!r}; known: {', '.join(TABLE_FILES)}")
            bench = TabularBenchmark.load(space, data / TABLE_FILES[space])
            t = time.perf_counter()
            predictor = FewShotPredictor.for_space(space, seed=args.seed, threads=1)
            predictor.meta_fit(bench, bench.devices)
            path = predictor.save(args.out / f"{space}.npz")
            print(f"{space}: {len(bench.devices)} devices, {time.perf_counter() - t:.0f} s -> "
                  f"{path} ({path.stat().st_size / 1e6:.2f} MB)")
    except HwnasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
