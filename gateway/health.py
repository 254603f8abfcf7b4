"""GatewayService's health follows TorchServe: NOT_SERVING while no replica can classify.

The server as a whole (health service name "") stays SERVING while the gateway process is fine:
an orchestrator restarts on that one, and routes requests on `foodcal.v1.GatewayService`, so it
can tell "restart me" from "wait for my dependency". A replica can classify when food101 and the
served nutrition version each have a READY worker (DescribeModel on the management API: cheap,
no prediction). A prediction would be the stricter test, but it costs a classifier forward pass
every probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health, health_pb2

from model_store.archive import FOOD101, NUTRITION
from model_store.torchserve_client import TorchServeClient

log = logging.getLogger(__name__)

PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 2.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _replica_problem(torchserve: TorchServeClient, index: int) -> str:
    """What keeps replica `index` from classifying ("" when nothing does)."""
    for model in (FOOD101, NUTRITION):
        described = await torchserve.describe(model, replica=index)
        workers = described[0].get("workers", []) if described else []
        if not any(worker.get("status") == "READY" for worker in workers):
            return f"{model} has no READY worker"
    return ""


async def why_not_ready(torchserve: TorchServeClient, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Empty when at least one replica can classify (requests fail over), else why none can."""
    reasons = []
    for index, replica in enumerate(torchserve.replicas):
        try:
            problem = await asyncio.wait_for(_replica_problem(torchserve, index), timeout_s)
        except TimeoutError:
            problem = f"no answer within {timeout_s:g}s"
        except Exception as error:  # unreachable, model not registered, garbage: all mean not ready
            problem = str(error)
        if not problem:
            return ""
        reasons.append(f"{replica.address}: {problem}")
    return "; ".join(reasons)


class ModelServerHealth:
    """Probes TorchServe every second and sets `service`'s health; logs each change once."""

    def __init__(
        self,
        torchserve: TorchServeClient,
        servicer: health.aio.HealthServicer,
        service: str,
        every_s: float = PROBE_EVERY_S,
    ) -> None:
        self.torchserve, self.servicer, self.service, self.every_s = torchserve, servicer, service, every_s
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Probe once now, before the server reports anything, then every second in a task.

        The task first runs after the server has marked every service SERVING, and sets this
        first probe's answer at once: a gateway that starts while TorchServe is down is not
        SERVING for a moment, and one that starts beside a healthy TorchServe never flips.
        """
        first = await why_not_ready(self.torchserve)
        self._task = asyncio.create_task(self._run(first))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, problem: str) -> None:
        previous: str | None = None
        while True:
            # Set after every probe, not only on a change: nothing else can leave a stale SERVING.
            await self.servicer.set(self.service, NOT_SERVING if problem else SERVING)
            if problem != previous:
                if problem:
                    log.warning("%s NOT_SERVING: TorchServe cannot classify (%s)", self.service, problem)
                elif previous is not None:
                    log.info("%s SERVING again: TorchServe classifies", self.service)
            previous = problem
            await asyncio.sleep(self.every_s)
            problem = await why_not_ready(self.torchserve)
