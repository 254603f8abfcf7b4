"""Serving carries requirements.txt only; what only `make models` needs is in requirements-build.txt
(issue 32: the serving image grows by no more than the runtime's wheel). NNCF and what it pulls
(scipy, scikit-learn, ...) added ~400 MB to the image when they were runtime requirements.

Checked on the venv's installed metadata and imports: no network, no Docker engine.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from packaging.requirements import Requirement

from model_store import checkpoint
from tests.deploy_helpers import (
    ONE_SHOT_SERVICES,
    ROOT,
    as_argv,
    healthcheck_argv,
    module_file,
    python_modules,
    services,
)

# NNCF and the heavy packages only it pulls into the venv.
BUILD_ONLY = {"nncf", "scipy", "scikit-learn"}


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(file: str) -> tuple[list[str], list[Requirement]]:
    """(the files it includes with -r, the requirements it names itself)."""
    includes, named = [], []
    for line in (ROOT / file).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            includes.append(line.removeprefix("-r ").strip())
        elif line:
            named.append(Requirement(line))
    return includes, named


def _installed_closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution that installing `requirements` brings, as the venv resolved them."""
    seen: set[str] = set()
    pending = [(r, set(r.extras)) for r in requirements]
    while pending:
        requirement, extras = pending.pop()
        if _name(requirement.name) in seen:
            continue
        seen.add(_name(requirement.name))
        try:
            requires = distribution(requirement.name).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            dependency = Requirement(text)
            if dependency.marker and not any(
                dependency.marker.evaluate({"extra": e}) for e in extras or {""}
            ):
                continue
            pending.append((dependency, set(dependency.extras)))
    return seen


def test_the_requirement_files_chain_runtime_build_dev():
    runtime_includes, runtime = _requirements("requirements.txt")
    build_includes, build = _requirements("requirements-build.txt")
    dev_includes, _ = _requirements("requirements-dev.txt")
    assert runtime_includes == [] and build_includes == ["requirements.txt"]
    assert dev_includes == ["requirements-build.txt"], "make setup must install what make models needs"
    assert "nncf" in {_name(r.name) for r in build}
    assert {_name(r.name) for r in runtime} & {_name(r.name) for r in build} == set(), "pinned twice"


def test_serving_requirements_do_not_pull_build_only_packages():
    _, runtime = _requirements("requirements.txt")
    closure = _installed_closure(runtime)
    assert {"openvino", "torch", "torchserve"} <= closure  # the walk reaches the installed metadata
    assert not closure & BUILD_ONLY, f"requirements.txt pulls {sorted(closure & BUILD_ONLY)}"
    _, build = _requirements("requirements-build.txt")
    assert _installed_closure(runtime + build) >= BUILD_ONLY, "the check above would see them"


def _serving_modules() -> set[str]:
    """What the serving containers run: each long-running service's command and probe."""
    modules = set()
    for name, service in services().items():
        if name in ONE_SHOT_SERVICES or "build" not in service:
            continue
        modules.update(python_modules(as_argv(service["command"])))
        modules.update(python_modules(healthcheck_argv(service)))
    return modules


def test_nothing_imported_at_serving_time_imports_nncf():
    # The entry points; the store check model_store.server runs at start (a no-op once the `models`
    # service built it); what TorchServe's workers load from the archives.
    loaded_later = [
        "model_store.build",
        "model_store.worker.food101_model",
        "model_store.worker.openvino_model",
    ]
    modules = sorted(_serving_modules()) + loaded_later
    assert {"model_store.server", "gateway", "labeler", "trainer", "foodcal.ops.healthcheck"} <= set(modules)
    # `python -m package` runs package/__main__.py: import that, not the package alone.
    entries = [f"{m}.__main__" if module_file(m).name == "__main__.py" else m for m in modules]
    # A bare `import nncf` anywhere on these paths fails here, as it would in the serving image.
    script = (
        f"import importlib, sys\nsys.modules['nncf'] = None\nfor m in {entries!r}: importlib.import_module(m)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_building_without_nncf_says_where_to_build(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # as in the serving image
    with pytest.raises(checkpoint.CheckpointError, match=r"requirements-build\.txt"):
        checkpoint.prepare_checkpoint("demo", tmp_path / "food101", runtime="auto")
    assert checkpoint.prepare_checkpoint("demo", tmp_path / "torch", runtime="torch")["runtime"] == "torch"
