"""The `labeler` fixture (LabelerService in-process against the OpenAI stub) and how tests call it."""

import pytest

import labeler.__main__ as labeler_main
from foodcal.v1 import labeler_pb2, labeler_pb2_grpc
from tests.conftest import INTERNAL_TOKEN, OPENAI_KEY, auth, make_settings, photo, start_service


def chatgpt_settings(tmp_path, stub, **overrides):
    """Settings with ChatGPT on, asked through the OpenAI stub."""
    values = {"use_chatgpt": True, "openai_api_key": OPENAI_KEY, "openai_base_url": stub.base_url}
    return make_settings(tmp_path, **{**values, **overrides})


@pytest.fixture
async def labeler(tmp_path, stub, db, channel_to):
    """`await labeler(**settings)`: a started labeler's stub; every one is stopped after the test."""

    async def start(**overrides):
        settings = chatgpt_settings(
            tmp_path, stub, **{"openai_timeout_s": 5.0, "openai_max_retries": 2, **overrides}
        )
        server = await start_service(labeler_main, settings, db)
        servers.append(server)
        return labeler_pb2_grpc.LabelerServiceStub(channel_to(server.port))

    servers = []
    yield start
    for server in servers:
        await server.stop(0)


def request(image=None, hints=(("pizza", 0.6), ("lasagna", 0.2), ("ravioli", 0.1)), note=""):
    message = labeler_pb2.LabelMealRequest(image=image or photo(), note=note)
    for label, p in hints:
        message.dish_hints.add(label=label, probability=p)
    return message


async def call(stub_, message, **kwargs):
    return await stub_.LabelMeal(message, metadata=auth(INTERNAL_TOKEN), timeout=30, **kwargs)
