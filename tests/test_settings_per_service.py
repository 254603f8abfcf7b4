"""One settings class per process plus a common part: disjoint fields, .env.example grouped the same
way, and each class reads its variables exactly as the whole `Settings` does."""

from __future__ import annotations

import re

import pytest

from foodcal.settings import (
    SERVICE_SETTINGS,
    CommonSettings,
    GatewaySettings,
    LabelerSettings,
    ModelSettings,
    Settings,
    SettingsError,
    TrainerSettings,
    load_settings,
)
from tests.deploy_helpers import ROOT

SECTION = re.compile(r"^# --- (\w+)")


def own_fields(kind: type[CommonSettings]) -> set[str]:
    if kind is CommonSettings:
        return set(CommonSettings.model_fields)
    return set(kind.model_fields) - set(CommonSettings.model_fields)


def env_example_sections() -> dict[str, set[str]]:
    """`# --- name` heading -> the variables listed under it."""
    sections: dict[str, set[str]] = {}
    current = None
    for line in (ROOT / ".env.example").read_text().splitlines():
        if heading := SECTION.match(line):
            current = sections.setdefault(heading.group(1), set())
        elif line and not line.startswith("#"):
            assert current is not None, f"{line!r} comes before any section heading"
            current.add(line.partition("=")[0].strip().lower())
    return sections


@pytest.fixture
def clean_environment(monkeypatch):
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)


def test_each_service_owns_its_fields_and_shares_only_the_common_part():
    services = [GatewaySettings, LabelerSettings, TrainerSettings, ModelSettings]
    for kind in services:
        assert set(CommonSettings.model_fields) <= set(kind.model_fields), kind.__name__
    for i, one in enumerate(services):
        for other in services[i + 1 :]:
            assert not own_fields(one) & own_fields(other), (one.__name__, other.__name__)
    union = set(CommonSettings.model_fields).union(*(own_fields(kind) for kind in services))
    assert union == set(Settings.model_fields)


def test_env_example_lists_each_class_under_its_own_heading():
    expected = {"common": own_fields(CommonSettings)}
    expected |= {name: own_fields(kind) for name, kind in SERVICE_SETTINGS.items()}
    assert env_example_sections() == expected


@pytest.mark.parametrize("name", sorted(SERVICE_SETTINGS))
def test_each_class_reads_env_example_as_the_whole_settings_do(name, clean_environment):
    """A validator a subclass overrode by name would read a variable differently here."""
    whole = Settings(_env_file=ROOT / ".env.example").model_dump()
    own = SERVICE_SETTINGS[name](_env_file=ROOT / ".env.example").model_dump()
    assert own == {field: whole[field] for field in own}


@pytest.mark.parametrize(
    ("kind", "variable", "value"),
    [
        (CommonSettings, "DATABASE_URL", "mysql://nope"),
        (CommonSettings, "INTERNAL_TLS_REQUIRE_CLIENT_CERT", "perhaps"),
        (GatewaySettings, "GATEWAY_PORT", "70000"),
        (GatewaySettings, "CLIENT_RATE_BURST", "0"),
        (LabelerSettings, "OPENAI_MAX_CONCURRENCY", "0"),
        (LabelerSettings, "OPENAI_INPUT_USD_PER_MILLION", "-1"),
        (TrainerSettings, "ROLLOUT", "sideways"),
        (TrainerSettings, "TRAINER_METRICS_PORT", "not-a-port"),
        (ModelSettings, "FOOD101_PRECISION", "fp8"),
        (ModelSettings, "TORCHSERVE_HTTP_PORT", "-1"),
    ],
)
def test_a_bad_value_stops_the_service_that_reads_it_naming_the_variable(
    kind, variable, value, monkeypatch, clean_environment
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(kind, _env_file=None)
    assert variable in str(raised.value)


def test_a_service_reads_only_its_own_variables(monkeypatch, clean_environment):
    monkeypatch.setenv("ROLLOUT", "sideways")  # the trainer's, and bad
    monkeypatch.setenv("LABELER_PORT", "6002")
    labeler = load_settings(LabelerSettings, _env_file=None)
    assert labeler.labeler_port == 6002
    assert not hasattr(labeler, "rollout")
    with pytest.raises(SettingsError, match="ROLLOUT"):
        load_settings(TrainerSettings, _env_file=None)


def test_the_gateways_labeler_deadline_is_checked_against_the_common_openai_call(clean_environment):
    with pytest.raises(SettingsError, match="LABELER_TIMEOUT_S"):
        load_settings(
            GatewaySettings, _env_file=None, openai_timeout_s=30, openai_max_retries=3, labeler_timeout_s=90
        )
