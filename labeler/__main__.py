"""`python -m labeler`: serve LabelerService until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from foodcal.grpc_server import ServiceSpec, serve_until_signalled
from foodcal.logs import setup_logging
from foodcal.settings import Settings, load_settings
from foodcal.store import Database
from foodcal.v1 import labeler_pb2, labeler_pb2_grpc
from labeler.chatgpt import ChatGPT
from labeler.labeling import Labeler
from labeler.service import LabelerServicer


def build(settings: Settings, db: Database) -> ServiceSpec:
    settings.require_internal_token()
    chatgpt = ChatGPT(settings) if settings.chatgpt_enabled else None
    labeler = Labeler(settings, db, chatgpt)

    async def on_stop() -> None:
        if chatgpt is not None:
            await chatgpt.close()

    return ServiceSpec(
        name="labeler",
        register=lambda server: labeler_pb2_grpc.add_LabelerServiceServicer_to_server(
            LabelerServicer(labeler), server
        ),
        service_names=[labeler_pb2.DESCRIPTOR.services_by_name["LabelerService"].full_name],
        tokens=[settings.internal_token],
        max_message_bytes=settings.grpc_max_message_bytes,
        on_stop=on_stop,
    )


def main() -> None:
    settings = load_settings()
    setup_logging("labeler", settings.log_level)
    db = Database(settings.database_url)
    db.migrate()
    mode = f"ChatGPT ({settings.openai_model})" if settings.chatgpt_enabled else "offline: reference table"
    logging.getLogger("labeler").info("labeling with %s", mode)
    asyncio.run(_serve(settings, db))


async def _serve(settings: Settings, db: Database) -> None:
    # Built inside the running loop, like every service (clients belong to the loop that makes them).
    await serve_until_signalled(build(settings, db), settings.bind_host, settings.labeler_port)


if __name__ == "__main__":
    main()
