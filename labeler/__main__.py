"""`python -m labeler`: serve LabelerService until SIGTERM."""

from __future__ import annotations

from foodcal.rpc.entrypoint import run_service
from foodcal.rpc.grpc_server import ServiceSpec
from foodcal.rpc.internal_tls import server_tls
from foodcal.settings import Settings
from foodcal.store import Database, open_image_store
from foodcal.v1 import labeler_pb2, labeler_pb2_grpc
from labeler.chatgpt import ChatGPT
from labeler.labeling import Labeler
from labeler.service import LabelerServicer


def build(settings: Settings, db: Database) -> ServiceSpec:
    settings.require_internal_token()
    chatgpt = ChatGPT(settings) if settings.chatgpt_enabled else None
    labeler = Labeler(settings, db, chatgpt, open_image_store(settings))

    async def on_stop() -> None:
        await labeler.drain(labeler.claim_ttl_s)  # after the server stopped: nothing new comes in
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
        tls=server_tls(settings),
    )


def main() -> None:
    run_service(
        "labeler",
        build,
        lambda settings: settings.labeler_port,
        lambda s: (
            "labeling with "
            + (f"ChatGPT ({s.openai_model})" if s.chatgpt_enabled else "offline: reference table")
        ),
    )


if __name__ == "__main__":
    main()
