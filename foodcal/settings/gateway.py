"""The gateway's settings: its clients (tokens, limits, TLS), the label queue, the flags it answers by."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from foodcal.settings.checks import SettingsError, is_example_token, is_loopback, require_tls_pair
from foodcal.settings.common import CommonSettings, openai_call_bound_s, split_csv


class GatewaySettings(CommonSettings):
    gateway_port: int = Field(50051, ge=0, le=65535)
    # Where clients reach the gateway when not BIND_HOST: a container binds 0.0.0.0 but its port
    # may be published on the host's 127.0.0.1 only (docker-compose.yml). Empty: BIND_HOST. Example
    # tokens are refused unless this address is loopback.
    gateway_published_host: str = ""
    # Prometheus `/metrics` (on BIND_HOST; 0 = any free port, logged at start-up).
    gateway_metrics_port: int = Field(9151, ge=0, le=65535)

    # Auth: client tokens and operator (admin) tokens. A client sees only its own samples; training,
    # versions, rollback and every sample need an admin token (gateway/auth.py).
    api_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # AnalyzeMeal per client token: a token bucket shared through the database by every gateway
    # (gateway/rate_limit.py); 0 = no limit. Admin tokens are not limited.
    client_rate_per_minute: float = Field(30.0, ge=0)
    client_rate_burst: int = Field(10, ge=1)
    # Every other client call (reads, corrections, AnalyzeMeal replays) spends a second, larger
    # bucket per token, so no RPC is free to flood; 0 = no limit.
    client_call_rate_per_minute: float = Field(600.0, ge=0)
    client_call_burst: int = Field(60, ge=1)
    # TLS for the gateway (both set, or neither: plaintext, meant for loopback only).
    gateway_tls_cert_file: Path | None = None
    gateway_tls_key_file: Path | None = None

    # Photos older than this many days are deleted (gateway/retention.py), their numbers kept; 0 = never.
    retention_days: int = Field(0, ge=0)
    retention_interval_s: float = Field(3600.0, gt=0)  # how often the gateway looks for them

    # The original design's flags (USE_CHATGPT is common: the labeler reads it too).
    use_trained_model: bool = True
    use_own_model_instead_chatgpt: bool = False
    # LABEL_POLICY=uncertain's thresholds (gateway/label_policy.py).
    label_policy_min_confidence: float = Field(0.6, ge=0, le=1)
    label_policy_min_dish_labels: int = Field(10, ge=0)
    label_policy_max_relative_width: float = Field(0.25, gt=0)

    # Label queue (gateway background worker)
    # The gateway's deadline on one LabelMeal: at least one paid call's longest wait (validated).
    labeler_timeout_s: float = Field(150.0, gt=0)
    label_lease_s: float = Field(30.0, gt=0)  # renewed while a label is in flight
    label_max_attempts: int = Field(8, ge=1)
    label_retry_base_s: float = Field(2.0, gt=0)
    label_retry_max_s: float = Field(300.0, gt=0)
    label_poll_interval_s: float = Field(1.0, gt=0)

    # The most a challenger may delay a request after the champion answered (gateway/challenger.py).
    rollout_challenger_grace_s: float = Field(0.05, ge=0, le=1.0)

    _tokens = field_validator("api_tokens", "admin_tokens", mode="before")(split_csv)

    @field_validator("gateway_tls_cert_file", "gateway_tls_key_file", mode="before")
    @classmethod
    def _empty_is_no_gateway_tls_file(cls, value: object) -> object:
        return value or None

    @field_validator("labeler_timeout_s")
    @classmethod
    def _outlasts_the_openai_call(cls, value: float, info) -> float:
        # Shorter, the gateway gives up on a call still paid for, and asks again.
        timeout, retries = info.data.get("openai_timeout_s"), info.data.get("openai_max_retries")
        if timeout is not None and retries is not None and value < openai_call_bound_s(timeout, retries):
            raise ValueError(
                f"must be at least OPENAI_TIMEOUT_S x (OPENAI_MAX_RETRIES + 1) plus the SDK's backoff "
                f"({openai_call_bound_s(timeout, retries):.0f} s for {timeout:g} s and {retries} retries)"
            )
        return value

    # -- the checks the gateway runs when it starts --------------------------------------------------

    def require_api_tokens(self) -> None:
        if not self.api_tokens:
            raise SettingsError("API_TOKENS: set at least one client token (comma-separated)")
        if any(len(token) < 8 for token in self.api_tokens):
            raise SettingsError("API_TOKENS: every token needs at least 8 characters")

    def require_admin_tokens(self) -> None:
        if any(len(token) < 8 for token in self.admin_tokens):
            raise SettingsError("ADMIN_TOKENS: every token needs at least 8 characters")
        if set(self.admin_tokens) & set(self.api_tokens):
            raise SettingsError("ADMIN_TOKENS: a token is a client's (API_TOKENS) or an admin's, not both")

    def refuse_example_tokens_beyond_loopback(self) -> None:
        """An example token is fine on loopback (`make run`), never where others reach."""
        where = (
            f"GATEWAY_PUBLISHED_HOST={self.gateway_published_host}"
            if self.gateway_published_host
            else f"BIND_HOST={self.bind_host}"
        )
        if is_loopback(self.gateway_published_host or self.bind_host):
            return
        tokens = {
            "API_TOKENS": self.api_tokens,
            "ADMIN_TOKENS": self.admin_tokens,
            "INTERNAL_TOKEN": [self.internal_token],
        }
        for name, values in tokens.items():
            if any(is_example_token(token) for token in values):
                raise SettingsError(
                    f"{name}: holds an example token ('...change-me'), known to anyone who has read "
                    f"this repository, and the gateway is reachable beyond loopback ({where}); set "
                    "tokens of your own in .env (e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'), or serve on 127.0.0.1"
                )

    def require_gateway_tls(self) -> None:
        require_tls_pair(
            {
                "GATEWAY_TLS_CERT_FILE": self.gateway_tls_cert_file,
                "GATEWAY_TLS_KEY_FILE": self.gateway_tls_key_file,
            }
        )
