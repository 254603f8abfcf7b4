"""The start-up every service shares: settings, logging, migrations, then serve until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from foodcal.rpc import metrics
from foodcal.rpc.grpc_server import ServiceSpec, serve_until_signalled
from foodcal.rpc.logs import setup_logging
from foodcal.settings import CommonSettings, load_settings
from foodcal.store import Database

ServiceSettings = TypeVar("ServiceSettings", bound=CommonSettings)


def run_service(
    name: str,
    kind: type[ServiceSettings],
    build: Callable[[ServiceSettings, Database], ServiceSpec],
    port_of: Callable[[ServiceSettings], int],
    describe: Callable[[ServiceSettings], str] | None = None,
    chatgpt_model: Callable[[ServiceSettings], str | None] = lambda settings: None,
) -> None:
    """`kind`: the service's own settings class; `chatgpt_model`: the model it labels with, if any."""
    settings = load_settings(kind)
    setup_logging(name, settings.log_level, settings.log_format)
    db = Database(settings.database_url)
    db.migrate()
    metrics.instrument(name, db, chatgpt_model(settings))
    port = getattr(settings, f"{name}_metrics_port")
    metrics_port = metrics.serve(settings.bind_host, port, f"{name.upper()}_METRICS_PORT")
    logging.getLogger(name).info("metrics on http://%s:%d/metrics", settings.bind_host, metrics_port)
    if describe is not None:
        logging.getLogger(name).info(describe(settings))

    async def serve() -> None:
        # Built inside the running loop: grpc.aio channels and clients belong to the loop that makes them.
        await serve_until_signalled(build(settings, db), settings.bind_host, port_of(settings))

    asyncio.run(serve())
