"""A stage's work on a Ray cluster: Ray actors that load a model (or a metric) once and take
whole pieces of work, at most one each at a time, so the driver holds one piece per worker.

An actor that dies (its process killed, its node lost) is restarted and the call it was
running retried (``max_restarts``, ``max_task_retries``); workers write their results where
a retried call finds them (the frame cache), or return them to the driver (scores). Ray is
imported only here and in what uses it, and only when a stage's backend is ``ray``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from typing import Any

from otpc.errors import InputError
from otpc.params import RayParams

RETRIES = 3  # times a call is retried after its worker died


def connect(cluster: RayParams) -> Any:
    """The ``ray`` module, connected to ``cluster.address`` (once per process);
    ``InputError`` naming ``ray.address`` if there is no cluster there."""
    import ray

    if not ray.is_initialized():
        address = None if cluster.address == "local" else cluster.address
        if address not in (None, "auto"):
            _answers(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as err:
            raise InputError(
                f"ray.address {cluster.address!r}: no Ray cluster there ({err})"
            ) from None
    return ray


def _answers(address: str, timeout: float = 10.0) -> None:
    """``InputError`` unless something listens at ``host:port`` (``ray://`` or not): Ray
    itself would wait minutes for a head that is not there."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise InputError(
            f"ray.address {address!r}: nothing answers there ({err.strerror or err}); "
            "is the head node up (`ray start --head`)?"
        ) from None


def _check_resources(ray: Any, cluster: RayParams) -> None:
    """``InputError`` if the cluster has fewer CPUs or GPUs than the workers ask for (their
    actors would wait for ever)."""
    have = ray.cluster_resources()
    for name, each in (("CPU", cluster.cpus_per_worker), ("GPU", cluster.gpus_per_worker)):
        wanted = each * cluster.workers
        if wanted > have.get(name, 0):
            raise InputError(
                f"ray.workers {cluster.workers} x {each:g} {name} each = {wanted:g} {name}s, "
                f"but the Ray cluster has {have.get(name, 0):g}"
            )


class Workers:
    """``cluster.workers`` Ray actors of the class ``worker``, built with ``args``, each
    given ``cpus_per_worker`` and ``gpus_per_worker`` (Ray sets a worker's torch threads to
    its CPUs); an actor that dies is restarted and its call retried."""

    def __init__(self, cluster: RayParams, worker: type, *args: Any) -> None:
        self.ray = ray = connect(cluster)
        _check_resources(ray, cluster)
        remote = ray.remote(max_restarts=-1, max_task_retries=RETRIES)(worker)
        remote = remote.options(num_cpus=cluster.cpus_per_worker, num_gpus=cluster.gpus_per_worker)
        self.actors = [remote.remote(*args) for _ in range(cluster.workers)]

    def agreed(self, method: str) -> Any:
        """Every worker's answer to ``method()``, which must be the same; a worker that could
        not start raises here."""
        try:
            answers = self.ray.get([getattr(actor, method).remote() for actor in self.actors])
        except self.ray.exceptions.ActorDiedError as err:
            raise RuntimeError(f"a Ray worker could not start: {err}") from None
        if any(answer != answers[0] for answer in answers):
            raise RuntimeError(
                f"the Ray workers differ ({method}): "
                + "; ".join(sorted({str(answer) for answer in answers}))
            )
        return answers[0]

    def map(self, method: str, items: Iterable[Any]) -> Iterator[Any]:
        """``method(item)`` for each item on a free worker, results as they come; ``items``
        is drawn only as workers free up, so the driver holds one item per worker."""
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        for item in items:
            if not pool.has_free():
                yield pool.get_next_unordered()
            pool.submit(lambda actor, it: getattr(actor, method).remote(it), item)
        while pool.has_next():
            yield pool.get_next_unordered()
