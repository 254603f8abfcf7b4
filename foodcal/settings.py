"""Typed settings, read once from the environment and `.env`.

A bad value stops start-up with a message that names the setting (see `load_settings`); the checks
a service runs on what it needs (tokens, TLS files) are in foodcal/settings_checks.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from foodcal.settings_checks import SettingsError, StartupChecks

# USD per 1M tokens (input, output). One table, used for every cost estimate.
OPENAI_PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-mini": (0.25, 2.00),
}

# The OpenAI SDK's longest wait between two tries (its MAX_RETRY_DELAY, without a Retry-After).
OPENAI_BACKOFF_S = 8.0


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings, StartupChecks):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Network: every service binds here; only the gateway is meant to be reachable by users.
    bind_host: str = "127.0.0.1"
    gateway_port: int = Field(50051, ge=0, le=65535)
    labeler_port: int = Field(50052, ge=0, le=65535)
    trainer_port: int = Field(50053, ge=0, le=65535)
    # Where clients reach the gateway when not BIND_HOST: a container binds 0.0.0.0 but its port
    # may be published on the host's 127.0.0.1 only (docker-compose.yml). Empty: BIND_HOST. Example
    # tokens are refused unless this address is loopback.
    gateway_published_host: str = ""
    labeler_address: str = "127.0.0.1:50052"
    trainer_address: str = "127.0.0.1:50053"
    # Prometheus `/metrics` of each service (on BIND_HOST; 0 = any free port, logged at start-up).
    gateway_metrics_port: int = Field(9151, ge=0, le=65535)
    labeler_metrics_port: int = Field(9152, ge=0, le=65535)
    trainer_metrics_port: int = Field(9153, ge=0, le=65535)
    # Largest gRPC message any server or channel accepts (a 10 MB photo plus framing).
    grpc_max_message_bytes: int = Field(12 * 1024 * 1024, ge=1024 * 1024)

    # Auth: client tokens for the gateway, operator (admin) tokens, one shared token between our
    # own services. A client sees only its own samples; training, versions, rollback and every
    # sample need an admin token (gateway/auth.py).
    api_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    internal_token: str = ""
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
    # TLS between our own services (foodcal/rpc/internal_tls.py): the labeler and the trainer serve this
    # certificate and key; callers trust INTERNAL_TLS_CA_FILE (default: the certificate itself)
    # and never need the key. Mutual TLS: the services require a client certificate signed by
    # INTERNAL_TLS_CA_FILE, and callers present theirs.
    internal_tls_cert_file: Path | None = None
    internal_tls_key_file: Path | None = None
    internal_tls_ca_file: Path | None = None
    internal_tls_client_cert_file: Path | None = None
    internal_tls_client_key_file: Path | None = None
    internal_tls_require_client_cert: bool = False

    # Storage
    database_url: str = "sqlite:///data/foodcal.db"
    data_dir: Path = Path("data")
    upload_dir: Path = Path("uploads")
    # Empty: images under UPLOAD_DIR. `s3://bucket/prefix` for an S3-compatible object store.
    image_store_url: str = ""
    s3_endpoint_url: str | None = None
    # Photos older than this many days are deleted (gateway/retention.py), their numbers kept; 0 = never.
    retention_days: int = Field(0, ge=0)
    retention_interval_s: float = Field(3600.0, gt=0)  # how often the gateway looks for them
    models_dir: Path = Path("models")
    model_store_dir: Path = Path("model_store/mar")

    # The original design's flags.
    use_chatgpt: bool = True
    use_trained_model: bool = True
    use_own_model_instead_chatgpt: bool = False

    # When ChatGPT is asked (gateway/label_policy.py): `always` (the original design) or
    # `uncertain` (only unsure photos, dishes with few labels, wide ranges, plus an exploration share).
    label_policy: Literal["always", "uncertain"] = "always"
    label_policy_exploration: float = Field(0.05, ge=0, le=1)
    label_policy_min_confidence: float = Field(0.6, ge=0, le=1)
    label_policy_min_dish_labels: int = Field(10, ge=0)
    label_policy_max_relative_width: float = Field(0.25, gt=0)
    # The level of the calibrated ranges shown with our numbers (foodcal/domain/calibration.py).
    range_level: float = Field(0.8, gt=0, lt=1)
    # What ChatGPT may cost per UTC day (0 = no limit); at the limit labels wait for midnight UTC.
    chatgpt_daily_budget_usd: float = Field(0.0, ge=0)
    # USD per 1M tokens for OPENAI_MODEL (both, or neither: the price table above). Needed with a
    # budget for a model the table lacks (gpt-5, o-series, dated snapshots, Azure deployments).
    openai_input_usd_per_million: float | None = Field(None, ge=0)
    openai_output_usd_per_million: float | None = Field(None, ge=0)

    # ChatGPT labeler
    openai_api_key: str = ""
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = Field(30.0, gt=0)
    openai_max_retries: int = Field(3, ge=0, le=10)
    openai_max_concurrency: int = Field(4, ge=1, le=64)

    # Label queue (gateway background worker)
    # The gateway's deadline on one LabelMeal: at least one paid call's longest wait (validated).
    labeler_timeout_s: float = Field(150.0, gt=0)
    label_lease_s: float = Field(30.0, gt=0)  # renewed while a label is in flight
    label_max_attempts: int = Field(8, ge=1)
    label_retry_base_s: float = Field(2.0, gt=0)
    label_retry_max_s: float = Field(300.0, gt=0)
    label_poll_interval_s: float = Field(1.0, gt=0)

    # Model server
    food101_model: str = "nateraw/food"
    # The classifier's arithmetic; `auto` = the fastest that this CPU supports and that passes the
    # accuracy guard against fp32 at `make models` (model_store/precision.py).
    food101_precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    # Which runtime serves it: `openvino` = converted at `make models` (static int8 through NNCF);
    # `auto` = whichever runtime x precision passing the guard is fastest; torch where conversion fails.
    food101_runtime: Literal["auto", "torch", "openvino"] = "auto"
    torchserve_endpoints: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:7070"])
    torchserve_management: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:7071"])
    # Inference is balanced over the replicas by gRPC (round_robin); empty = the replicas above, which
    # must then be IP addresses if several; else one DNS name that resolves to each (dns:///host:port).
    torchserve_inference_target: str = ""
    torchserve_http_port: int = Field(8080, ge=0, le=65535)
    torchserve_management_http_port: int = Field(8081, ge=0, le=65535)
    torchserve_metrics_port: int = Field(8082, ge=0, le=65535)
    torchserve_timeout_s: float = Field(10.0, gt=0)
    # Where TorchServe's gRPC listeners and REST inference bind (0.0.0.0 inside docker-compose).
    torchserve_bind_host: str = "127.0.0.1"
    torchserve_run_dir: Path = Path("run/torchserve")
    # The classifier's workers (0 = one per CPU core) and its server-side batching
    # (0 = 8 with one worker, 1 with several: see model_store/build.py).
    food101_workers: int = Field(0, ge=0, le=64)
    food101_batch_size: int = Field(0, ge=0, le=256)
    food101_max_batch_delay_ms: int = Field(10, ge=0, le=1000)

    # Trainer
    min_training_samples: int = Field(50, ge=1)
    auto_retrain_every_n_labels: int = Field(0, ge=0)
    auto_retrain_interval_s: float = Field(0.0, ge=0)
    # Where several clients contribute to a run, the most of its photos and of its corrections one
    # client may weigh (trainer/trust.py); a deployment with a single client is never capped.
    training_max_share_per_client: float = Field(0.3, gt=0, le=1)
    swap_drain_s: float = Field(0.5, ge=0)
    # How a version that passed the offline gate goes live (trainer/rollout.py): `replace` serves it
    # at once; `shadow` and `split` make it a challenger until ROLLOUT_MIN_SAMPLES live labels decide.
    rollout: Literal["replace", "shadow", "split"] = "replace"
    rollout_split_percent: float = Field(10.0, gt=0, lt=100)
    # The most a challenger may delay a request after the champion answered (gateway/challenger.py).
    rollout_challenger_grace_s: float = Field(0.05, ge=0, le=1.0)
    rollout_min_samples: int = Field(100, ge=10)
    # A served version is rolled back by itself when the version it replaced is clearly better on
    # its last ROLLBACK_WINDOW live labels (at least ROLLBACK_MIN_SAMPLES): see trainer/rollout.py.
    rollback_window: int = Field(200, ge=10)
    rollback_min_samples: int = Field(50, ge=10)
    rollout_check_interval_s: float = Field(10.0, gt=0)

    log_level: str = "INFO"
    # text: one readable line per event; json: one JSON object per line, with the request or run id.
    log_format: Literal["text", "json"] = "text"

    _csv = field_validator(
        "api_tokens", "admin_tokens", "torchserve_endpoints", "torchserve_management", mode="before"
    )(_split_csv)

    @field_validator("openai_base_url", "s3_endpoint_url")
    @classmethod
    def _empty_is_default(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("openai_input_usd_per_million", "openai_output_usd_per_million", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator(
        "gateway_tls_cert_file",
        "gateway_tls_key_file",
        "internal_tls_cert_file",
        "internal_tls_key_file",
        "internal_tls_ca_file",
        "internal_tls_client_cert_file",
        "internal_tls_client_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_no_file(cls, value: object) -> object:
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

    @field_validator("image_store_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value and not value.startswith(("s3://", "file://")):
            raise ValueError("must start with s3:// or file://")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @property
    def chatgpt_enabled(self) -> bool:
        return self.use_chatgpt and bool(self.openai_api_key)

    @property
    def openai_prices(self) -> tuple[float, float] | None:
        """USD per 1M (input, output) tokens of OPENAI_MODEL: the settings', else the table's."""
        if self.openai_input_usd_per_million is not None and self.openai_output_usd_per_million is not None:
            return self.openai_input_usd_per_million, self.openai_output_usd_per_million
        return OPENAI_PRICES_PER_MILLION.get(self.openai_model)


def openai_call_bound_s(timeout_s: float, max_retries: int) -> float:
    """The longest one label call waits on OpenAI: every try, and the SDK's backoff between them."""
    return timeout_s * (max_retries + 1) + OPENAI_BACKOFF_S * max_retries


def load_settings(**overrides: object) -> Settings:
    """Read settings once; a bad value raises SettingsError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        raise SettingsError(f"bad setting: {problems}") from None
