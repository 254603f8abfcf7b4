"""The labeler's settings: how it reaches OpenAI (or a compatible server) and what a call costs."""

from __future__ import annotations

from pydantic import Field, field_validator

from foodcal.settings.checks import SettingsError
from foodcal.settings.common import CommonSettings

# USD per 1M tokens (input, output). One table, used for every cost estimate.
OPENAI_PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-mini": (0.25, 2.00),
}


class LabelerSettings(CommonSettings):
    labeler_port: int = Field(50052, ge=0, le=65535)
    # Prometheus `/metrics` (on BIND_HOST; 0 = any free port, logged at start-up).
    labeler_metrics_port: int = Field(9152, ge=0, le=65535)

    # No key: offline, answers from the reference table.
    openai_api_key: str = ""
    openai_base_url: str | None = None
    openai_max_concurrency: int = Field(4, ge=1, le=64)
    # USD per 1M tokens for OPENAI_MODEL (both, or neither: the price table above). Needed with a
    # budget for a model the table lacks (gpt-5, o-series, dated snapshots, Azure deployments).
    openai_input_usd_per_million: float | None = Field(None, ge=0)
    openai_output_usd_per_million: float | None = Field(None, ge=0)

    @field_validator("openai_base_url")
    @classmethod
    def _empty_base_url_is_openai(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("openai_input_usd_per_million", "openai_output_usd_per_million", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def chatgpt_enabled(self) -> bool:
        return self.use_chatgpt and bool(self.openai_api_key)

    @property
    def openai_prices(self) -> tuple[float, float] | None:
        """USD per 1M (input, output) tokens of OPENAI_MODEL: the settings', else the table's."""
        if self.openai_input_usd_per_million is not None and self.openai_output_usd_per_million is not None:
            return self.openai_input_usd_per_million, self.openai_output_usd_per_million
        return OPENAI_PRICES_PER_MILLION.get(self.openai_model)

    def require_known_prices(self) -> None:
        """A budget counts what calls cost: a model of unknown price would cost 0 and never reach it."""
        given = (self.openai_input_usd_per_million, self.openai_output_usd_per_million)
        if (given[0] is None) != (given[1] is None):
            raise SettingsError(
                "OPENAI_INPUT_USD_PER_MILLION and OPENAI_OUTPUT_USD_PER_MILLION: set both, or neither"
            )
        if self.chatgpt_daily_budget_usd > 0 and self.chatgpt_enabled and self.openai_prices is None:
            raise SettingsError(
                f"CHATGPT_DAILY_BUDGET_USD: OPENAI_MODEL={self.openai_model!r} has no known price, so "
                "its calls would cost 0 and the budget would never bind; set "
                "OPENAI_INPUT_USD_PER_MILLION and OPENAI_OUTPUT_USD_PER_MILLION"
            )
