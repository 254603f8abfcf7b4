"""The monitoring files (compose scrape config, monitoring overlay, Grafana dashboard), checked
without running the services."""

from __future__ import annotations

import json
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from foodcal.settings import load_settings
from tests.metrics_helpers import DASHBOARD, MONITORING, SCRAPE_CONFIG
from tests.processes import ROOT

pytestmark = pytest.mark.torchserve


def test_the_compose_scrape_config_targets_each_service_on_its_metrics_port():
    defaults = load_settings(_env_file=None)
    expected = {
        "foodcal-gateway": f"gateway:{defaults.gateway_metrics_port}",
        "foodcal-labeler": f"labeler:{defaults.labeler_metrics_port}",
        "foodcal-trainer": f"trainer:{defaults.trainer_metrics_port}",
        "torchserve": f"torchserve:{defaults.torchserve_metrics_port}",
    }
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    targets = {
        job["job_name"]: [target for static in job["static_configs"] for target in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {job: [target] for job, target in expected.items()}
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {target.split(":")[0] for target in expected.values()} <= set(services)


def test_the_monitoring_overlay_is_valid_compose_and_mounts_files_that_exist():
    overlay = yaml.safe_load(MONITORING.read_text())
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(overlay), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    for service in overlay["services"].values():
        for ports in service.get("ports", ()):
            assert ports.startswith("127.0.0.1:"), ports  # the UIs on the host's loopback only
        for volume in service.get("volumes", ()):
            source = volume.split(":")[0]
            if source.startswith("./"):  # relative to the first compose file: the repository root
                assert (ROOT / source).exists(), source
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(
        panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"] if "targets" in panel
    )


def test_the_compose_scrape_config_is_valid_for_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (`make test` installs Debian's prometheus package)")
    result = subprocess.run([promtool, "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
