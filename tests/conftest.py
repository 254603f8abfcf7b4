"""Shared fixtures: real servers on ephemeral loopback ports, a real TorchServe, real databases."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from PIL import Image

from foodcal.rpc.grpc_server import RunningServer, start_server
from foodcal.settings import SERVICE_SETTINGS, Settings, load_settings
from foodcal.store import Database
from model_store.build import build_models
from model_store.ports import free_port
from model_store.server import TorchServeProcess, start_on_free_ports, wait_until_ready
from model_store.torchserve_client import TorchServeClient
from model_store.torchserve_config import TorchServeConfig
from tests.openai_stub import OpenAIStub

pytest_plugins = ["tests.fixtures_databases", "tests.fixtures_labeler", "tests.fixtures_system"]

API_TOKEN = "test-client-token"  # a client (API_TOKENS): its own samples only
OTHER_CLIENT_TOKEN = "test-other-client-token"
ADMIN_TOKEN = "test-admin-token"  # an operator (ADMIN_TOKENS): training, versions, every sample
INTERNAL_TOKEN = "test-internal-token"
OPENAI_KEY = "sk-test-key-123"


def photo(color=(200, 80, 40), size=(320, 240), fmt="JPEG", **save) -> bytes:
    """A real encoded image; vary `color` to get a different sha256."""
    image = Image.new("RGB", size, color)
    for x in range(0, size[0], 16):  # some structure, so it is not a flat colour
        image.paste((color[1], color[2], color[0]), (x, 0, x + 4, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


# -- settings ------------------------------------------------------------------------------------


def make_settings(tmp: Path, **overrides) -> Settings:
    values = {
        "_env_file": None,
        "api_tokens": [API_TOKEN, OTHER_CLIENT_TOKEN],
        "admin_tokens": [ADMIN_TOKEN],
        "internal_token": INTERNAL_TOKEN,
        "database_url": f"sqlite:///{tmp}/foodcal.db",
        "upload_dir": tmp / "uploads",
        "models_dir": tmp / "models",
        "use_chatgpt": False,
        "openai_api_key": "",
        "label_retry_base_s": 0.2,
        "label_retry_max_s": 1.0,
        "label_poll_interval_s": 0.1,
        "swap_drain_s": 0.5,
        # Converting to OpenVINO is the runtime tests' subject (tests/test_runtimes.py), not every build's.
        "food101_runtime": "torch",
    }
    values.update(overrides)
    return load_settings(**values)


# -- TorchServe, started once ------------------------------------------------------------------


@dataclass
class TorchServeHandle:
    process: TorchServeProcess
    config: TorchServeConfig
    client: TorchServeClient

    @property
    def inference(self) -> str:
        return self.config.inference_address

    @property
    def management(self) -> str:
        return self.config.management_address

    def settings(self) -> dict:
        return {
            "torchserve_endpoints": [self.inference],
            "torchserve_management": [self.management],
            "model_store_dir": self.config.model_store,
        }


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model_store")
    # torch: the handler tests read the torch model; OpenVINO's is tests/test_runtimes.py's subject
    settings = load_settings(
        _env_file=None, food101_model="demo", food101_runtime="torch", model_store_dir=root / "mar"
    )
    build_models(settings)
    return root / "mar"


def start_torchserve(model_store: Path, run_dir: Path) -> TorchServeProcess:
    return start_on_free_ports(model_store, run_dir)


@pytest.fixture(scope="session")
async def torchserve(model_store, tmp_path_factory) -> TorchServeHandle:
    process = start_torchserve(model_store, tmp_path_factory.mktemp("torchserve"))
    config = process.config
    client = TorchServeClient([config.inference_address], [config.management_address])
    try:
        await wait_until_ready(client, process, timeout_s=180)
        yield TorchServeHandle(process, config, client)
    finally:
        await client.close()
        process.stop()


@pytest.fixture
async def clean_nutrition(torchserve):
    """Leave TorchServe serving only nutrition v0, whatever a test deployed."""
    yield
    client = torchserve.client
    replica = client.replicas[0]
    await client.set_default(replica, "nutrition", "0")
    for version in await client.registered_versions():
        if version != "0":
            await client.unregister(replica, "nutrition", version)
    for mar in torchserve.config.model_store.glob("nutrition-v*.mar"):
        if mar.name != "nutrition-v0.mar":
            mar.unlink()


# -- the OpenAI-compatible stub ------------------------------------------------------------------


@pytest.fixture(scope="session")
def openai_stub() -> OpenAIStub:
    stub = OpenAIStub(OPENAI_KEY).start()
    yield stub
    stub.stop()


@pytest.fixture
def stub(openai_stub) -> OpenAIStub:
    openai_stub.reset()
    yield openai_stub
    openai_stub.reset()


# -- our services, in-process on ephemeral ports -------------------------------------------------


async def start_service(module, settings: Settings, db: Database, port: int = 0) -> RunningServer:
    name = module.__name__.removesuffix(".__main__")
    own = SERVICE_SETTINGS[name].model_validate(settings.model_dump())  # its own class, as in production
    port = port or (free_port() if name == "gateway" else 0)
    spec = module.build(own, db, port) if name == "gateway" else module.build(own, db)
    return await start_server(spec, "127.0.0.1", port)


def auth(token: str = ADMIN_TOKEN) -> tuple[tuple[str, str], ...]:
    """Bearer metadata; the admin's by default (it may call every RPC and sees every sample)."""
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def channel_to():
    """Open client channels to started servers; all closed at the end of the test."""
    channels: list[grpc.aio.Channel] = []

    def open_channel(port: int) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        await channel.close()
