"""docker-compose.yml, Dockerfile and the container probes, checked without a Docker engine.

- docker-compose.yml is valid against the Compose Specification JSON schema, vendored unchanged in
  tests/data/compose-spec.json (compose-spec/compose-spec, schema/compose-spec.json, commit
  00655e2222608fa6eaecdf12ac5195889ca2244a).
- compose runs what `make run` runs (supervisord.conf), configured only through settings that exist and
  that .env.example lists with their defaults.
- only the gateway is published; every service has a healthcheck, a restart policy and waits for
  healthy dependencies.
- `python -m foodcal.healthcheck` against a real gRPC health server; `python -m
  model_store.readiness` against nothing and against a real TorchServe.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import re
import shlex
import sys
import time
from pathlib import Path

import grpc
import jsonschema
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from foodcal.settings import Settings, load_settings
from model_store.torchserve_config import TorchServeConfig
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA_FILE = Path(__file__).with_name("data") / "compose-spec.json"
TORCHSERVE_PORTS = {7070, 7071, 8080, 8081, 8082}
OUR_SERVICES = {"torchserve", "gateway", "labeler", "trainer"}
# Settings whose .env.example value is deliberately not the default: placeholders to change.
EXAMPLE_IS_NOT_DEFAULT = {"API_TOKENS", "ADMIN_TOKENS", "INTERNAL_TOKEN"}


# -- helpers ---------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def built_services() -> dict[str, dict]:
    """Our own services: the ones built from our Dockerfile (postgres is an official image)."""
    return {name: service for name, service in services().items() if "build" in service}


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def python_modules(argv: list[str]) -> list[str]:
    """Every X in `python -m X` (also `.venv/bin/python -m X`)."""
    return [
        argv[i + 2]
        for i in range(len(argv) - 2)
        if Path(argv[i]).name.startswith("python") and argv[i + 1] == "-m"
    ]


def healthcheck_argv(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    assert test[0] == "CMD", test
    return test[1:]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def exec_or_shell_argv(arguments: str) -> list[str]:
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def module_file(module: str) -> Path | None:
    """The file `python -m module` would run, if the repository has it."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


def published_container_ports(service: dict) -> set[int]:
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            target = str(entry["target"])
        else:
            target = str(entry).split("/")[0].rsplit(":", 1)[-1]
        start, _, end = target.partition("-")
        ports.update(range(int(start), int(end or start) + 1))
    return ports


def published_host_ports(service: dict) -> set[int]:
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry.get("published", entry["target"])))
        else:
            parts = str(entry).split("/")[0].split(":")
            host = parts[-2] if len(parts) > 1 else parts[-1]  # a bare port publishes a random one
            if host:
                start, _, end = host.partition("-")
                ports.update(range(int(start), int(end or start) + 1))
    return ports


def volume_mounts(service: dict) -> dict[str, str]:
    """container path -> named volume."""
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts[entry["target"]] = entry["source"]
        else:
            source, target = entry.split(":")[:2]
            mounts[target] = source
    return mounts


def container_settings(name: str, monkeypatch) -> Settings:
    """The settings a container would load: .env (a copy of .env.example) plus its overrides."""
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for key, value in environment(services()[name]).items():
        monkeypatch.setenv(key, value)
    return load_settings(_env_file=ROOT / ".env.example")


# -- the Compose file is valid -------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec_schema():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_rejects_a_broken_compose_file():
    schema = json.loads(SCHEMA_FILE.read_text())
    broken = compose()
    broken["services"]["gateway"]["depends_on"]["postgres"] = {"condition": "service_ready"}
    broken["services"]["labeler"]["healthcheck"]["tst"] = ["CMD", "true"]
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_compose_has_the_five_services_and_named_volumes():
    spec = compose()
    assert set(spec["services"]) == OUR_SERVICES | {"postgres"}
    assert set(built_services()) == OUR_SERVICES
    assert spec["services"]["postgres"]["image"] == "postgres:15"
    declared = set(spec["volumes"])
    for name, service in spec["services"].items():
        for target, source in volume_mounts(service).items():
            assert source in declared, f"{name}: {source} (mounted on {target}) is not a named volume"
    assert "/var/lib/postgresql/data" in volume_mounts(spec["services"]["postgres"])


# -- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_copies_only_files_that_exist_and_are_not_dockerignored():
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copies = [args for keyword, args in dockerfile_instructions() if keyword in ("COPY", "ADD")]
    assert copies
    for arguments in copies:
        parts = [part for part in exec_or_shell_argv(arguments) if not part.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert source.rstrip("/") not in ignored, f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    required = {".venv", "data", "uploads", "models", "model_store/mar", "model_store/checkpoints", "run"}
    assert required | {".git", ".env"} <= ignored
    assert "**/__pycache__" in ignored or "__pycache__" in ignored


def test_dockerfile_installs_the_pinned_requirements_with_cpu_torch_and_a_jre():
    instructions = dockerfile_instructions()
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    # The services run the last stage; an earlier one may only be the empty `wheels` stage.
    assert stages[-1].startswith("python:3.11-slim"), stages
    assert all(stage == "scratch AS wheels" for stage in stages[:-1]), stages
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert len(installs) == 1, "one pip install, from requirements.txt only"
    assert re.search(r"(-r|--requirement)\s+requirements\.txt\b", installs[0])
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in installs[0]
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text()
    assert any("openjdk-17-jre-headless" in run for run in runs)
    codegen = [i for i, run in enumerate(runs) if python_modules(shlex.split(run)) == ["foodcal.codegen"]]
    assert codegen and codegen[0] > runs.index(installs[0]), "codegen runs after the install"


def test_every_python_module_started_anywhere_is_a_module_of_the_repository():
    modules = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("RUN", "CMD", "ENTRYPOINT", "HEALTHCHECK"):
            modules.update(python_modules(exec_or_shell_argv(arguments)))
    for service in services().values():
        if "command" in service:
            modules.update(python_modules(as_argv(service["command"])))
        modules.update(python_modules(healthcheck_argv(service)))
    assert {"foodcal.codegen", "foodcal.healthcheck", "model_store.readiness", "gateway"} <= modules
    for module in sorted(modules):
        assert module_file(module) is not None, f"python -m {module}: no module file in the repository"


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
    assert composed == programs
    assert all(len(modules) == 1 for modules in composed.values())


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
        assert settings.labeler_address == f"labeler:{settings.labeler_port}", name
        assert settings.trainer_address == f"trainer:{settings.trainer_port}", name
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


# -- exposure and lifecycle ------------------------------------------------------------------------


def test_only_the_gateway_publishes_a_port_and_never_a_torchserve_port():
    publishing = {name for name, service in services().items() if service.get("ports")}
    assert publishing == {"gateway"}
    assert published_container_ports(services()["gateway"]) == {50051}
    for name, service in services().items():
        leaked = (published_container_ports(service) | published_host_ports(service)) & TORCHSERVE_PORTS
        assert not leaked, f"{name} publishes TorchServe port(s) {leaked}"
        assert service.get("network_mode") != "host", name


def test_every_service_has_a_healthcheck_a_restart_policy_and_waits_for_healthy_dependencies():
    spec = services()
    for name, service in spec.items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert healthcheck_argv(service), name
        assert service.get("restart") == "unless-stopped", name
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on must name a condition"
        for dependency, rule in depends_on.items():
            assert dependency in spec, f"{name} depends on unknown {dependency}"
            assert rule.get("condition") == "service_healthy", f"{name} -> {dependency}"
    assert set(spec["gateway"]["depends_on"]) == {"postgres", "torchserve", "labeler", "trainer"}
    assert {"postgres", "torchserve"} <= set(spec["trainer"]["depends_on"])
    assert "postgres" in spec["labeler"]["depends_on"]
    assert "pg_isready" in " ".join(healthcheck_argv(spec["postgres"]))
    for name in ("gateway", "labeler", "trainer"):
        assert python_modules(healthcheck_argv(spec[name])) == ["foodcal.healthcheck"], name
    assert python_modules(healthcheck_argv(spec["torchserve"])) == ["model_store.readiness"]


# -- the probes ------------------------------------------------------------------------------------


async def run_probe(*args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, stderr.decode(), time.monotonic() - started


@pytest.fixture
async def health_server():
    servicer = health.aio.HealthServicer()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_healthcheck_exits_0_when_serving(health_server):
    servicer, address = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    code, stderr, _ = await run_probe("-m", "foodcal.healthcheck", address)
    assert code == 0, stderr


async def test_healthcheck_fails_when_not_serving(health_server):
    servicer, address = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, stderr, _ = await run_probe("-m", "foodcal.healthcheck", address)
    assert code == 1 and "NOT_SERVING" in stderr


async def test_healthcheck_fails_after_graceful_shutdown_starts(health_server):
    servicer, address = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.enter_graceful_shutdown()
    code, stderr, _ = await run_probe("-m", "foodcal.healthcheck", address)
    assert code == 1, stderr


async def test_healthcheck_asks_about_a_named_service(health_server):
    servicer, address = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("foodcal.v1.GatewayService", health_pb2.HealthCheckResponse.SERVING)
    code, _, _ = await run_probe(
        "-m", "foodcal.healthcheck", address, "--service", "foodcal.v1.GatewayService"
    )
    assert code == 0
    code, stderr, _ = await run_probe("-m", "foodcal.healthcheck", address, "--service", "no.Such")
    assert code == 1 and "NOT_FOUND" in stderr


async def test_healthcheck_fails_when_nothing_listens():
    code, stderr, seconds = await run_probe("-m", "foodcal.healthcheck", f"127.0.0.1:{free_port()}")
    assert code == 1 and "UNAVAILABLE" in stderr
    assert seconds < 10


async def test_healthcheck_gives_up_at_its_deadline_when_the_server_hangs():
    from foodcal import healthcheck

    assert healthcheck.DEFAULT_TIMEOUT_S == 3.0

    async def accept_and_stay_silent(reader, writer):
        await reader.read()  # never answers the HTTP/2 handshake
        writer.close()

    silent = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        code, stderr, seconds = await run_probe("-m", "foodcal.healthcheck", f"127.0.0.1:{port}")
    finally:
        silent.close()
    assert code == 1 and "DEADLINE_EXCEEDED" in stderr
    assert 2.5 < seconds < 15


async def test_readiness_fails_when_torchserve_is_not_there():
    address = f"127.0.0.1:{free_port()}"
    code, stderr, _ = await run_probe("-m", "model_store.readiness", address, "--timeout", "5")
    assert code == 1 and "not ready" in stderr


@pytest.mark.torchserve
async def test_readiness_passes_only_when_torchserve_answers_a_prediction(torchserve):
    code, stderr, _ = await run_probe("-m", "model_store.readiness", torchserve.inference)
    assert code == 0, stderr
    # The HTTP ping port answers too, but it is not a gRPC inference endpoint: not ready.
    rest = f"127.0.0.1:{torchserve.config.http_port}"
    code, stderr, _ = await run_probe("-m", "model_store.readiness", rest, "--timeout", "5")
    assert code == 1, stderr
