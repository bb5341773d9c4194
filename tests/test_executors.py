"""Executors on a real local Ray: results as they complete, a dying worker survived, errors as one line."""

import os

import pytest

from hwnas.errors import HwnasError
from hwnas.executors import create_executor


def dying_once_task(marker_dir):
    """A task whose worker process dies (os._exit) the first time it sees item 3: a real crash."""

    class Task:
        def __call__(self, item):
            marker = os.path.join(marker_dir, "died")
            if item == 3 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return item * item, os.getpid()

    return Task()


def test_a_worker_that_dies_is_restarted_and_nothing_is_lost(ray_cluster, tmp_path):
    executor = create_executor("ray", workers=2)
    try:
        out = list(executor.map(dying_once_task(str(tmp_path)), range(8)))
    finally:
        executor.shutdown()
    assert [v for v, _ in out] == [i * i for i in range(8)]  # every result, in order
    assert (tmp_path / "died").exists()  # the crash did happen


def slow_first_task(marker_dir):
    """Item 0 finishes only once the four other items are done (on the other worker)."""
    import time

    class Slow:
        def __call__(self, item):
            if item == 0:
                deadline = time.time() + 120
                while len(os.listdir(marker_dir)) < 4 and time.time() < deadline:
                    time.sleep(0.02)
            else:
                open(os.path.join(marker_dir, str(item)), "w").close()
            return item

    return Slow()


def test_results_come_as_they_complete(ray_cluster, tmp_path):
    executor = create_executor("ray", workers=2)
    try:
        (tmp_path / "a").mkdir()
        order = [i for i, _ in executor.imap_unordered(slow_first_task(str(tmp_path / "a")), range(5))]
        assert sorted(order) == list(range(5)) and order[-1] == 0  # the slow first item held nothing back
        (tmp_path / "b").mkdir()
        assert list(executor.map(slow_first_task(str(tmp_path / "b")), range(5))) == list(range(5))
    finally:
        executor.shutdown()


def test_a_task_error_is_one_line(ray_cluster):
    class Bad:
        def __call__(self, item):
            if item == 2:
                raise HwnasError("candidate 2: cannot be measured")
            if item == 4:
                raise ValueError("boom\nsecond line")
            return item

    executor = create_executor("ray", workers=1)
    try:
        with pytest.raises(HwnasError) as err:
            list(executor.map(Bad(), range(3)))
        assert str(err.value) == "candidate 2: cannot be measured"
        with pytest.raises(HwnasError, match=r"^a measurement failed on a Ray worker: ValueError: boom$"):
            list(executor.map(Bad(), [4]))
    finally:
        executor.shutdown()


def test_timings_on_one_host_never_overlap():
    """Two workers timing at once wait for each other (the host's timing lock), in separate processes."""
    import subprocess
    import sys
    import time

    script = ("import time, sys\nfrom hwnas.devices.backends import exclusive_timing\n"
              "with exclusive_timing():\n    print(time.time(), flush=True)\n    time.sleep(1.0)\n"
              "    print(time.time(), flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    spans = sorted(tuple(float(t) for t in p.communicate(timeout=120)[0].split()) for p in procs)
    assert spans[1][0] >= spans[0][1] - 0.01  # the second began only after the first ended
