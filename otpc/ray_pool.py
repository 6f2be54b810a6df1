"""A stage's work on a Ray cluster: Ray actors that load a model (or a metric) once and take
whole pieces of work, at most one each at a time, so the driver holds one piece per worker.

An actor that dies (its process killed, its node lost) is restarted and the call it was
running retried (``max_restarts``, ``max_task_retries``); workers write their results where
a retried call finds them (the frame cache), or return them to the driver (scores). Each
worker runs the driver's otpc, byte for byte (``code_digest``), or the stage stops before
any work. Ray is imported only here and in what uses it, and only when a stage's backend is
``ray``.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from otpc.errors import InputError, OtpcError
from otpc.params import RayParams

RETRIES = 3  # times a worker is restarted, and a call retried, after its process died


def code_digest() -> str:
    """sha256 of otpc's Python sources (their paths in the package and their bytes)."""
    package = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def connect(cluster: RayParams) -> Any:
    """The ``ray`` module, connected to ``cluster.address`` (once per process);
    ``InputError`` naming ``ray.address`` if there is no cluster there."""
    import ray

    if not ray.is_initialized():
        given = os.environ.get("RAY_ADDRESS") if cluster.address == "auto" else cluster.address
        if given and given not in ("auto", "local"):
            _answers(given)
        try:
            ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
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
    except (OSError, ValueError) as err:
        raise InputError(
            f"ray.address {address!r}: nothing answers there ({getattr(err, 'strerror', err)}); "
            "is the head node up (`ray start --head`)?"
        ) from None


def _check_resources(ray: Any, cluster: RayParams) -> None:
    """``InputError`` unless the cluster's nodes can hold the workers, each whole on one
    node (a worker that fits nowhere would wait for ever)."""
    each = {"CPU": cluster.cpus_per_worker, "GPU": cluster.gpus_per_worker}
    slots = 0
    for node in ray.nodes():
        if node.get("Alive"):
            have = node.get("Resources", {})
            fits = [math.floor(have.get(k, 0) / v + 1e-9) for k, v in each.items() if v > 0]
            slots += min(fits) if fits else cluster.workers
    if slots < cluster.workers:
        asked = ", ".join(f"{v:g} {k}" for k, v in each.items() if v > 0) or "nothing"
        raise InputError(
            f"ray.workers = {cluster.workers}: the Ray cluster's nodes hold only {slots} "
            f"workers of {asked} each (ray.cpus_per_worker, ray.gpus_per_worker)"
        )


class Worker:
    """What runs in each actor: the stage's worker class, built there; an error building it
    is kept and raised by every call, so that it reaches the driver as itself."""

    def __init__(self, worker: type, *args: Any) -> None:
        self.error: Exception | None = None
        try:
            self.worker = worker(*args)
        except Exception as err:  # raised again by each call  # noqa: BLE001
            self.error = err

    def code(self) -> str:
        return code_digest()

    def call(self, method: str, *args: Any) -> Any:
        if self.error is not None:
            raise self.error
        return getattr(self.worker, method)(*args)


class Workers:
    """``cluster.workers`` Ray actors each holding a ``worker(*args)``, each given
    ``cpus_per_worker`` (also its torch threads: Ray sets them) and ``gpus_per_worker``
    (none: no GPU is visible to it); an actor that dies is restarted and its call retried."""

    def __init__(self, cluster: RayParams, worker: type, *args: Any) -> None:
        self.ray = ray = connect(cluster)
        _check_resources(ray, cluster)
        no_gpu = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}} if not cluster.gpus_per_worker else {}
        remote = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)(Worker).options(
            num_cpus=cluster.cpus_per_worker,
            num_gpus=cluster.gpus_per_worker,
            runtime_env=no_gpu or None,
        )
        self.actors = [remote.remote(worker, *args) for _ in range(cluster.workers)]
        codes = set(self._get([actor.code.remote() for actor in self.actors]))
        if codes != {code_digest()}:
            raise InputError(
                f"the Ray workers run other otpc code ({', '.join(sorted(codes))}) than this "
                f"machine ({code_digest()}): install the same commit on every node"
            )

    def _get(self, refs: Any) -> Any:
        """``ray.get``, with an otpc error raised in a worker raised here as itself."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, OtpcError):
                raise err.cause from None
            raise

    def ask_all(self, method: str, *args: Any) -> list[Any]:
        """Every worker's answer to ``method(*args)``."""
        return self._get([actor.call.remote(method, *args) for actor in self.actors])

    def map(self, method: str, items: Iterable[Any]) -> Iterator[Any]:
        """``method(item)`` for each item on a free worker, results as they come; ``items``
        is drawn only as workers free up, so the driver holds one item per worker."""
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        try:
            for item in items:
                if not pool.has_free():
                    yield pool.get_next_unordered()
                pool.submit(lambda actor, it: actor.call.remote(method, it), item)
            while pool.has_next():
                yield pool.get_next_unordered()
        except self.ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, OtpcError):
                raise err.cause from None
            raise


def same_device(theirs: str, device: str) -> None:
    """``InputError`` unless ``model.device`` (``device``) means here the device type the
    workers use (``theirs``): the stage's params must mean one thing."""
    from otpc.models import pick_device

    here = pick_device(device).type
    if theirs != here:
        raise InputError(
            f"model.device {device!r}: the Ray workers use {theirs}, this machine would use "
            f"{here}; name the device, or run the driver on a node like the workers'"
        )


def agreed(answers: list[Any], what: str) -> Any:
    """The one answer every worker gave about ``what``; ``InputError`` listing them if they
    differ (nodes with other models or settings)."""
    if any(answer != answers[0] for answer in answers):
        found = "; ".join(sorted({str(answer) for answer in answers}))
        raise InputError(f"the Ray workers differ in {what}: {found}")
    return answers[0]
