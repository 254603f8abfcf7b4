"""Typed settings, read once from the environment and `.env`, one class per process.

`CommonSettings` (common.py) holds what several processes read; `GatewaySettings`,
`LabelerSettings`, `TrainerSettings` and `ModelSettings` (TorchServe and `make models`) each add
the fields only that process reads, and each service loads only its own. `Settings` is every one of
them at once, for what stands outside the services: tests that start the whole stack, benchmarks,
and the check that .env.example lists every variable. A bad value stops start-up with a message
that names the variable (`load_settings`).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from foodcal.settings.checks import SettingsError
from foodcal.settings.common import CommonSettings, openai_call_bound_s
from foodcal.settings.gateway import GatewaySettings
from foodcal.settings.labeler import OPENAI_PRICES_PER_MILLION, LabelerSettings
from foodcal.settings.model import ModelSettings
from foodcal.settings.trainer import TrainerSettings

__all__ = [
    "OPENAI_PRICES_PER_MILLION",
    "SERVICE_SETTINGS",
    "CommonSettings",
    "GatewaySettings",
    "LabelerSettings",
    "ModelSettings",
    "Settings",
    "SettingsError",
    "TrainerSettings",
    "load_settings",
    "openai_call_bound_s",
]


class Settings(GatewaySettings, LabelerSettings, TrainerSettings, ModelSettings):
    """Every process's settings in one object; no service reads this one."""


# The class each process loads, by the name it logs under (docker-compose.yml's service names).
SERVICE_SETTINGS: dict[str, type[CommonSettings]] = {
    "gateway": GatewaySettings,
    "labeler": LabelerSettings,
    "trainer": TrainerSettings,
    "torchserve": ModelSettings,
}

AnySettings = TypeVar("AnySettings", bound=CommonSettings)


def load_settings(kind: type[AnySettings] = Settings, /, **overrides: object) -> AnySettings:
    """Read `kind` once; a bad value raises SettingsError naming the variable."""
    try:
        return kind(**overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        raise SettingsError(f"bad setting: {problems}") from None
