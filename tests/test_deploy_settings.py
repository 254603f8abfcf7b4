"""compose runs what `make run` runs (supervisord.conf), configured only through settings that exist
and that .env.example lists with their defaults; checked without a Docker engine."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

from foodcal.settings import Settings, SettingsError, load_settings
from model_store.build import food101_config
from model_store.torchserve_config import TorchServeConfig
from tests.deploy_helpers import (
    EXAMPLE_IS_NOT_DEFAULT,
    OUR_SERVICES,
    ROOT,
    as_argv,
    built_services,
    container_settings,
    env_example,
    environment,
    healthcheck_argv,
    published_addresses,
    python_modules,
    services,
    volume_mounts,
)

# -- compose runs what `make run` runs, configured through real settings --------------------------


def test_compose_runs_the_entry_points_make_run_supervises():
    supervised = configparser.RawConfigParser()
    supervised.read(ROOT / "supervisord.conf")
    programs = {
        section.removeprefix("program:"): python_modules(shlex.split(supervised[section]["command"]))
        for section in supervised.sections()
        if section.startswith("program:")
    }
    composed = {name: python_modules(as_argv(s["command"])) for name, s in built_services().items()}
    # `make run` runs `make models` first: compose's one-shot `models` service.
    make_models = re.search(r"^models:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert composed.pop("models") == python_modules(
        shlex.split(make_models.group(1).replace("$(PY)", "python"))
    )
    assert composed == programs
    assert all(len(modules) == 1 for modules in composed.values())


def test_the_models_build_and_torchserve_see_the_same_build_settings(monkeypatch):
    """TorchServe checks the store against its own settings at start; the image it runs cannot build
    (no NNCF), so the `models` service must have built it for exactly these settings."""

    def build_settings(name: str) -> tuple:
        loaded = container_settings(name, monkeypatch)
        return (loaded.food101_model, loaded.food101_precision, loaded.food101_runtime,
                food101_config(loaded), loaded.model_store_dir)  # fmt: skip

    assert build_settings("models") == build_settings("torchserve")


def test_every_compose_variable_is_a_setting_listed_in_env_example():
    fields = {name.upper() for name in Settings.model_fields}
    example = env_example()
    for name, service in built_services().items():
        assert service["env_file"] in (".env", [".env"]), name
        for key in environment(service):
            assert key in fields, f"{name}: {key} is not a setting of foodcal.settings.Settings"
            assert key in example, f"{name}: {key} is missing from .env.example"


def test_env_example_lists_every_setting_with_its_default(monkeypatch):
    example = env_example()
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in example)
    assert not missing, f".env.example lacks {missing}"
    assert not set(example) - {name.upper() for name in Settings.model_fields}
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    defaults = Settings(_env_file=None).model_dump()
    from_example = Settings(_env_file=ROOT / ".env.example").model_dump()
    differs = {name.upper() for name in defaults if defaults[name] != from_example[name]}
    assert differs == EXAMPLE_IS_NOT_DEFAULT, {
        name: (defaults[name.lower()], from_example[name.lower()]) for name in differs
    }


def test_each_container_loads_valid_settings_that_fit_together(monkeypatch):
    loaded = {name: container_settings(name, monkeypatch) for name in OUR_SERVICES}
    for name, settings in loaded.items():
        assert settings.bind_host == "0.0.0.0", name
        assert settings.database_url == "postgresql://foodcal:foodcal@postgres:5432/foodcal", name
        # Every container dials the port the labeler and the trainer containers listen on.
        assert settings.labeler_address == f"labeler:{loaded['labeler'].labeler_port}", name
        assert settings.trainer_address == f"trainer:{loaded['trainer'].trainer_port}", name
    assert loaded["gateway"].torchserve_endpoints == ["torchserve:7070"]
    assert loaded["trainer"].torchserve_management == ["torchserve:7071"]
    # TorchServe listens where the others look for it and its probe asks.
    torchserve = TorchServeConfig.from_settings(loaded["torchserve"])
    assert torchserve.bind_host == "0.0.0.0"
    assert (torchserve.grpc_inference_port, torchserve.grpc_management_port) == (7070, 7071)
    probe = healthcheck_argv(services()["torchserve"])
    assert probe[-1] == f"127.0.0.1:{torchserve.grpc_inference_port}"
    for name in ("gateway", "labeler", "trainer"):
        port = getattr(loaded[name], f"{name}_port")
        assert healthcheck_argv(services()[name])[-1] == f"127.0.0.1:{port}", name


def test_shared_volumes_are_mounted_where_the_settings_point(monkeypatch):
    def mounted(name: str, path: Path) -> str | None:
        return volume_mounts(services()[name]).get(str(path))

    store = {
        name: mounted(name, container_settings(name, monkeypatch).model_store_dir) for name in OUR_SERVICES
    }
    assert store["torchserve"] and store["torchserve"] == store["trainer"], store
    uploads = {name: mounted(name, container_settings(name, monkeypatch).upload_dir) for name in OUR_SERVICES}
    assert uploads["gateway"] and uploads["gateway"] == uploads["trainer"], uploads
    assert mounted("trainer", container_settings("trainer", monkeypatch).models_dir)
    # build_models keeps the classifier checkpoint next to the store; it must survive a recreate.
    checkpoints = container_settings("torchserve", monkeypatch).model_store_dir.parent / "checkpoints"
    assert mounted("torchserve", checkpoints)


def test_torchserve_binds_grpc_and_rest_inference_to_the_bind_host_only():
    config = TorchServeConfig(model_store=Path("/store"), run_dir=Path("/run"), bind_host="0.0.0.0")
    properties = dict(line.split("=", 1) for line in config.properties().splitlines())
    assert properties["grpc_inference_address"] == properties["grpc_management_address"] == "0.0.0.0"
    assert properties["inference_address"] == "http://0.0.0.0:8080"
    assert properties["management_address"] == "http://127.0.0.1:8081"
    assert properties["metrics_address"] == "http://0.0.0.0:8082"  # read-only; Prometheus scrapes it
    default = TorchServeConfig.from_settings(load_settings(_env_file=None))
    assert default.bind_host == "127.0.0.1"
    assert "0.0.0.0" not in default.properties()


# -- the gateway is published on loopback, so the example tokens may serve --------------------------


def test_compose_publishes_the_gateway_on_loopback_where_the_example_tokens_may_serve(monkeypatch):
    assert published_addresses(services()["gateway"]) == {"127.0.0.1"}
    gateway = container_settings("gateway", monkeypatch)
    assert gateway.bind_host == "0.0.0.0" and gateway.gateway_published_host == "127.0.0.1"
    assert gateway.api_tokens == ["dev-token-change-me"]  # cp .env.example .env, unedited
    gateway.refuse_example_tokens_beyond_loopback()


def test_compose_published_beyond_loopback_refuses_the_example_tokens(monkeypatch):
    """FOODCAL_PUBLISH moves the port mapping and what the gateway is told, together."""
    exposed = {"FOODCAL_PUBLISH": "0.0.0.0"}
    assert published_addresses(services(exposed)["gateway"]) == {"0.0.0.0"}
    gateway = container_settings("gateway", monkeypatch, exposed)
    with pytest.raises(SettingsError, match=r"^API_TOKENS: .*GATEWAY_PUBLISHED_HOST=0\.0\.0\.0"):
        gateway.refuse_example_tokens_beyond_loopback()
