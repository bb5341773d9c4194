"""Executors fan costly evaluations out: ``map(task, items)`` in order.

``local`` runs in this process. ``ray`` keeps a pool of actors, each holding one copy of
the task (so a supernet is loaded once per worker, not once per candidate); ``ray.init``
starts a local cluster unless an address is given (``auto`` joins a running one).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, List, Optional

from .errors import HwnasError
from .registry import Registry

EXECUTORS = Registry("executor")


@EXECUTORS.register("local")
class LocalExecutor:
    def __init__(self, workers: int = 1, address: Optional[str] = None, **_):
        self.workers = 1

    def map(self, task: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            yield task(item)

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
            try:
                if address:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False)
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

    def _pool(self, task):
        from ray.util import ActorPool

        if self._pool_task is not task:  # a new task: new actors holding it
            for actor in self._actors:
                self._ray.kill(actor)
            task_ref = self._ray.put(task)
            self._actors = [self._actor_cls.remote(task_ref) for _ in range(self.workers)]
            self._pool_task = task
        return ActorPool(self._actors)

    def map(self, task: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        pool = self._pool(task)
        yield from pool.map(lambda actor, item: actor.run.remote(item), list(items))

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
