"""Executors fan costly evaluations out: ``map(task, items)`` in order, ``imap_unordered`` as done.

``local`` runs in this process. ``ray`` keeps a pool of actors, each holding one copy of
the task (so a supernet is loaded once per worker, not once per candidate); ``ray.init``
starts a local cluster unless an address is given (``auto`` joins a running one). A Ray
worker that dies is restarted and its task retried (``MAX_RESTARTS``); each worker gets its
next item as soon as it is free, and a task's error comes back as our one-line HwnasError.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any, Callable, Iterable, Iterator, List, Optional

from .errors import HwnasError
from .registry import Registry

EXECUTORS = Registry("executor")
# A Ray worker that dies (out of memory, a segfault, a killed process) is restarted and the task it
# held is retried on it, up to this many times, before the run stops (and can be resumed).
MAX_RESTARTS = 3


@EXECUTORS.register("local")
class LocalExecutor:
    def __init__(self, workers: int = 1, address: Optional[str] = None, **_):
        self.workers = 1

    def map(self, task: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            yield task(item)

    def imap_unordered(self, task: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple]:
        yield from enumerate(self.map(task, items))

    def shutdown(self):
        pass


class _TaskActor:
    """Holds one task object for its lifetime; ``run`` applies it to an item."""

    def __init__(self, task):
        self.task = task

    def run(self, item):
        return self.task(item)

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


#: How long joining a Ray cluster may take before the run gives up (ray.init itself retries for minutes).
RAY_CONNECT_TIMEOUT_S = 30
_PROBE = ("import sys, ray\n"
          "ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False)\n"
          "ray.shutdown()\n")


def probe_ray(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Join the cluster at ``address`` once in a child process, bounded by ``timeout``.

    ``ray.init`` on an unreachable address retries for minutes, printing a warning a second;
    the child keeps that off the terminal and is killed at the bound.
    """
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise HwnasError(f"executor.address: no Ray cluster answered at {address!r} within {timeout:g} s; start "
                         f"it ('ray start --head') or fix the address, or set executor.kind: local") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith((" ", "["))]
        reason = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "it failed")
        raise HwnasError(f"executor.address: cannot join Ray at {address!r}: {reason[:300]}; start the cluster "
                         f"('ray start --head') or fix the address, or set executor.kind: local")


@EXECUTORS.register("ray")
class RayExecutor:
    """``resources``: custom resources each actor needs, e.g. ``{"device:jetson": 1}`` pins the
    actors to the node that holds the device (the cluster at ``address`` must offer them)."""

    def __init__(self, workers: int = 2, address: Optional[str] = None, resources: Optional[dict] = None):
        import ray

        self.workers = workers
        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            if address:
                probe_ray(address)
            try:
                if address:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False)
                else:
                    # Not "Started a local Ray instance" nor "Token authentication is enabled" on every run: the
                    # cluster is this run's own, on this host.
                    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
                    ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False,
                             logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise HwnasError(f"executor: cannot start or reach Ray at {address or 'local'}: {exc}") from None
            self._started_here = True
        missing = [r for r in (resources or {}) if r not in ray.cluster_resources()]
        if missing:
            self.shutdown()
            raise HwnasError(f"executor: no Ray node offers the resource {missing[0]!r} (start the device's node "
                             f"with --resources='{{\"{missing[0]}\": 1}}', or give executor.address)")
        self._actor_cls = ray.remote(num_cpus=1, resources=resources or None)(_TaskActor)
        self._pool_task = None
        self._actors: List[Any] = []

    def _pool(self, task) -> List[Any]:
        if self._pool_task is not task:  # a new task: new actors holding it
            for actor in self._actors:
                self._ray.kill(actor)
            # The task itself (small: settings, no loaded models) travels inline with each actor's creation,
            # so a restarted actor can always be rebuilt (an object-store argument could be gone by then).
            options = dict(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
            self._actors = [self._actor_cls.options(**options).remote(task) for _ in range(self.workers)]
            self._pool_task = task
        return self._actors

    def imap_unordered(self, task: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple]:
        """``(index, result)`` of each item as soon as it is done; a free worker takes the next item."""
        queue = iter(enumerate(items))
        pending = {}  # object ref -> (item index, actor)

        def give(actor):
            nxt = next(queue, None)
            if nxt is not None:
                pending[actor.run.remote(nxt[1])] = (nxt[0], actor)

        for actor in self._pool(task):
            give(actor)
        while pending:
            (ref,), _ = self._ray.wait(list(pending), num_returns=1)
            index, actor = pending.pop(ref)
            result = self._get(ref)
            give(actor)
            yield index, result

    def map(self, task: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """In order; results are taken as they complete and held until their turn."""
        done, turn = {}, 0
        for index, result in self.imap_unordered(task, items):
            done[index] = result
            while turn in done:
                yield done.pop(turn)
                turn += 1

    def _get(self, ref):
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return self._ray.get(ref)
        except RayTaskError as err:
            cause = getattr(err, "cause", None) or err  # the exception the task raised
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            if isinstance(cause, HwnasError):
                raise HwnasError(first) from None
            raise HwnasError(f"a measurement failed on a Ray worker: {type(cause).__name__}: {first}") from None
        except RayActorError as err:
            raise HwnasError(f"a Ray worker died {MAX_RESTARTS + 1} times in a row (out of memory, or a crash); "
                             f"the run stops here and 'hwnas resume' continues it: {str(err).splitlines()[0]}") from None

    def nodes(self) -> List[str]:
        """The Ray node id of each actor (where the measurements run)."""
        return self._ray.get([actor.node.remote() for actor in self._actors])

    def shutdown(self):
        for actor in getattr(self, "_actors", []):
            self._ray.kill(actor)
        self._actors, self._pool_task = [], None
        if self._started_here:
            self._ray.shutdown()


def create_executor(kind: str, workers: int = 1, address: Optional[str] = None, **options):
    return EXECUTORS.create(kind, workers=workers, address=address, **options)
