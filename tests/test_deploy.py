"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

- docker-compose.yml is valid against the Compose Specification JSON schema, vendored unchanged in
  tests/data/compose-spec.json (compose-spec/compose-spec, schema/compose-spec.json, commit
  00655e2222608fa6eaecdf12ac5195889ca2244a).
- only the gateway is published; every service has a healthcheck, a restart policy and waits for
  healthy dependencies.

The settings compose passes are checked in tests/test_deploy_settings.py, the container probes in
tests/test_deploy_probes.py.
"""

from __future__ import annotations

import json
import re
import shlex

import jsonschema

from tests.deploy_helpers import (
    OUR_SERVICES,
    ROOT,
    SCHEMA_FILE,
    TORCHSERVE_PORTS,
    as_argv,
    built_services,
    compose,
    dockerfile_instructions,
    exec_or_shell_argv,
    healthcheck_argv,
    module_file,
    published_container_ports,
    published_host_ports,
    python_modules,
    services,
    volume_mounts,
)

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
    codegen = [i for i, run in enumerate(runs) if python_modules(shlex.split(run)) == ["foodcal.ops.codegen"]]
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
    assert {"foodcal.ops.codegen", "foodcal.ops.healthcheck", "model_store.readiness", "gateway"} <= modules
    for module in sorted(modules):
        assert module_file(module) is not None, f"python -m {module}: no module file in the repository"


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
        assert python_modules(healthcheck_argv(spec[name])) == ["foodcal.ops.healthcheck"], name
    assert python_modules(healthcheck_argv(spec["torchserve"])) == ["model_store.readiness"]
