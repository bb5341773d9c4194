"""Ray fan-out: evaluations of a fixed cost on 1 worker and on 2, side by side in one run.

The task sleeps ``--cost`` seconds (a measurement of known, load-independent length), so the
figures are the executor's own: efficiency = T(1 worker) / (2 x T(2 workers)), and the
scheduling overhead per task = (T - n x cost / workers) / (n / workers). Each pair is run
``--repeats`` times, interleaved, on one local Ray started once.

    python benchmarks/ray_fanout.py --tasks 24 --cost 0.5 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_section  # noqa: E402


class FixedCost:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, item):
        time.sleep(self.seconds)
        return item


def timed(executor, task, n) -> float:
    start = time.perf_counter()
    out = list(executor.map(task, range(n)))
    elapsed = time.perf_counter() - start
    assert out == list(range(n))
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=24)
    parser.add_argument("--cost", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray

    from hwnas.executors import create_executor

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)  # both pools alive: 1 + 2 actors
    task = FixedCost(args.cost)
    pools = {w: create_executor("ray", workers=w) for w in (1, 2)}
    times = {1: [], 2: []}
    for w, ex in pools.items():  # actors up before timing
        list(ex.map(task, range(w)))
    for _ in range(args.repeats):
        for w in (1, 2):
            times[w].append(timed(pools[w], task, args.tasks))
    for ex in pools.values():
        ex.shutdown()
    ray.shutdown()

    t1, t2 = statistics.median(times[1]), statistics.median(times[2])
    efficiency = t1 / (2 * t2)
    overhead = {w: (statistics.median(times[w]) - args.tasks * args.cost / w) / (args.tasks / w) for w in (1, 2)}
    body = f"""{args.tasks} evaluations of a fixed {args.cost:g} s each (the task sleeps: a cost the machine's load
cannot change, so what is measured is the executor), through `hwnas.executors.RayExecutor` on one
local Ray, 1 worker and 2 workers interleaved, {args.repeats} times each (median).

| workers | wall time (s) | ideal (s) | scheduling overhead per task (ms) |
|---|---|---|---|
| 1 | {t1:.2f} | {args.tasks * args.cost:.2f} | {overhead[1] * 1e3:.1f} |
| 2 | {t2:.2f} | {args.tasks * args.cost / 2:.2f} | {overhead[2] * 1e3:.1f} |

Parallel efficiency with 2 workers: **{efficiency:.3f}** (target ≥ 0.8). All runs: 1 worker
{', '.join(f'{t:.2f}' for t in times[1])} s; 2 workers {', '.join(f'{t:.2f}' for t in times[2])} s."""
    write_section("ray_fanout", "Ray fan-out: 2 workers vs 1", body)
    print(body)


if __name__ == "__main__":
    main()
