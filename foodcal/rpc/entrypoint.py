"""The start-up every service shares: settings, logging, migrations, then serve until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from foodcal.rpc import metrics
from foodcal.rpc.grpc_server import ServiceSpec, serve_until_signalled
from foodcal.rpc.logs import setup_logging
from foodcal.settings import Settings, load_settings
from foodcal.store import Database


def run_service(
    name: str,
    build: Callable[[Settings, Database], ServiceSpec],
    port_of: Callable[[Settings], int],
    describe: Callable[[Settings], str] | None = None,
) -> None:
    settings = load_settings()
    setup_logging(name, settings.log_level, settings.log_format)
    db = Database(settings.database_url)
    db.migrate()
    metrics.instrument(name, db, settings.openai_model if settings.chatgpt_enabled else None)
    port = getattr(settings, f"{name}_metrics_port")
    metrics_port = metrics.serve(settings.bind_host, port, f"{name.upper()}_METRICS_PORT")
    logging.getLogger(name).info("metrics on http://%s:%d/metrics", settings.bind_host, metrics_port)
    if describe is not None:
        logging.getLogger(name).info(describe(settings))

    async def serve() -> None:
        # Built inside the running loop: grpc.aio channels and clients belong to the loop that makes them.
        await serve_until_signalled(build(settings, db), settings.bind_host, port_of(settings))

    asyncio.run(serve())
