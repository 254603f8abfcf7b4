"""What the deployment tests share: docker-compose.yml, the Dockerfile and .env.example, parsed."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from foodcal.settings import SERVICE_SETTINGS, CommonSettings, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA_FILE = Path(__file__).with_name("data") / "compose-spec.json"
TORCHSERVE_PORTS = {7070, 7071, 8080, 8081, 8082}
OUR_SERVICES = {"torchserve", "gateway", "labeler", "trainer"}
# Built from our Dockerfile too, but run once and exit: `models` builds the model store (what `make
# models` does) in the image that has requirements-build.txt, before TorchServe starts.
ONE_SHOT_SERVICES = {"models"}
# Settings whose .env.example value is deliberately not the default: placeholders to change.
EXAMPLE_IS_NOT_DEFAULT = {"API_TOKENS", "ADMIN_TOKENS", "INTERNAL_TOKEN"}


# -- helpers ---------------------------------------------------------------------------------------


def compose(variables: dict[str, str] | None = None) -> dict:
    """docker-compose.yml as `docker compose config` sees it: `${VAR:-default}` interpolated from
    `variables` (the shell or the project's .env), their defaults where unset."""
    return _interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), variables or {})


def services(variables: dict[str, str] | None = None) -> dict[str, dict]:
    return compose(variables)["services"]


_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?)-([^}]*))?\}")


def _interpolate(node, variables: dict[str, str]):
    if isinstance(node, dict):
        return {key: _interpolate(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, variables) for value in node]
    if not isinstance(node, str):
        return node

    def value(match: re.Match) -> str:
        name, colon, default = match.groups()
        given = variables.get(name)
        if given is None or (colon and not given):  # `:-` also replaces an empty value
            return default or ""
        return given

    return _VARIABLE.sub(value, node)


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


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions after its FROM, keyed by the FROM's arguments, in file order."""
    stages: dict[str, list[tuple[str, str]]] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            stages[arguments] = []
        elif stages:
            stages[list(stages)[-1]].append((keyword, arguments))
    return stages


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


def published_addresses(service: dict) -> set[str]:
    """The host addresses a service's ports are published on ("0.0.0.0" where none is named)."""
    addresses = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            addresses.add(entry.get("host_ip", "0.0.0.0"))
        else:
            parts = str(entry).split("/")[0].split(":")
            addresses.add(parts[0] if len(parts) == 3 else "0.0.0.0")
    return addresses


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


def container_settings(name: str, monkeypatch, variables: dict[str, str] | None = None) -> CommonSettings:
    """The settings a container would load (its service's own class): .env (a copy of .env.example)
    plus its overrides."""
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)
    for key, value in environment(services(variables)[name]).items():
        monkeypatch.setenv(key, value)
    kind = SERVICE_SETTINGS["torchserve" if name == "models" else name]  # `models` builds for TorchServe
    return load_settings(kind, _env_file=ROOT / ".env.example")
