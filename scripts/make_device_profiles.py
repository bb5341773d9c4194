"""Generate the shipped device profiles from the shared benchmark tables.

    python scripts/make_device_profiles.py [--data DIR] [--out DIR]

For every device column of ``nb201``/``fbnet``/``ofa`` tables (listed in the tables'
``devices.csv``) writes ``<out>/<device>/device.yaml`` and ``samples-<space>.csv`` with the
device's latency on the space's 10 reference architectures only (HELP's hardware-embedding
archs, what a user would measure), plus ``<out>/_references/<space>.csv`` listing those
architectures so ``hwnas devices refs`` works without the shared data. The output is
small (a few KB per device) and fully determined by the tables.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from hwnas.devices.registry import PROFILE_FILE, SHIPPED_DIR, DeviceSpec, Samples, write_samples
from hwnas.errors import HwnasError
from hwnas.tabular import TABLE_FILES, TabularBenchmark, default_data_dir

KINDS = {"desktop_gpu": "gpu", "server_gpu": "gpu", "desktop_cpu": "cpu", "mobile": "phone"}


def read_device_list(data: Path) -> list:
    with open(data / "devices.csv", newline="") as f:
        return list(csv.DictReader(f))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the benchmark tables")
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    args = parser.parse_args(argv)
    data = args.data or default_data_dir()
    try:
        devices = read_device_list(data)
        tables = {space: TabularBenchmark.load(space, data / TABLE_FILES[space]) for space in TABLE_FILES}
    except (OSError, HwnasError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    space_of_file = {TABLE_FILES[s]: s for s in TABLE_FILES}

    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "_references").mkdir(parents=True)
    for space, bench in tables.items():
        with open(args.out / "_references" / f"{space}.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["arch_idx", "arch"])
            for idx, genome in zip(bench.reference_archs(), bench.reference_genomes()):
                writer.writerow([int(idx), bench.genome_to_arch(genome)])

    profiles: dict = {}
    for row in devices:
        space = space_of_file[row["file"]]
        bench = tables[space]
        refs = bench.reference_genomes()
        values = bench.lookup(refs, row["column"])
        if not np.isfinite(values).all():
            print(f"skipping {row['device']} on {space}: no value for every reference architecture", file=sys.stderr)
            continue
        name = row["device"]
        spec = profiles.setdefault(name, {
            "name": name, "kind": KINDS.get(row["category"], "other"), "hardware": row["hardware"],
            "backend": "table", "batch_size": int(row["batch_size"] or 1),
            "source": f"{row['source']} (via hwnas-bench/{row['file']}, 10 reference archs)",
            "labels": ["shipped"], "spaces": {},
        })
        spec["spaces"][space] = space
        folder = args.out / name
        folder.mkdir(exist_ok=True)
        archs = [bench.genome_to_arch(g) for g in refs]
        write_samples(folder / f"samples-{space}.csv", Samples(space, archs, refs, {"latency_ms": values}))
    for name, spec in profiles.items():
        DeviceSpec(**spec)  # fail here, not at load time, on a bad field
        (args.out / name / PROFILE_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {len(profiles)} device profiles and {len(tables)} reference lists to {args.out} "
          f"({size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
