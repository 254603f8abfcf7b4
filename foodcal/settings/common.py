"""The settings more than one process reads: where the others are, the stores, the shared flags.

Each service's class (gateway.py, labeler.py, trainer.py, model.py) adds the fields only it reads;
a field two of them read lives here. Variable names are the fields' names in capitals, no prefix:
they are the users' API (README, docs/, .env.example, docker-compose.yml, deploy/k8s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from foodcal.settings.checks import InternalChecks

# The OpenAI SDK's longest wait between two tries (its MAX_RETRY_DELAY, without a Retry-After).
OPENAI_BACKOFF_S = 8.0


def openai_call_bound_s(timeout_s: float, max_retries: int) -> float:
    """The longest one label call waits on OpenAI: every try, and the SDK's backoff between them."""
    return timeout_s * (max_retries + 1) + OPENAI_BACKOFF_S * max_retries


def split_csv(value: object) -> object:
    """A comma-separated variable as a list (NoDecode fields: not JSON)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class CommonSettings(BaseSettings, InternalChecks):
    # extra="ignore": every process reads the same .env, which holds the other services' variables too.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Network: every service binds here; only the gateway is meant to be reachable by users.
    bind_host: str = "127.0.0.1"
    # Where the gateway (and `make backfill`) reach the labeler and the trainer.
    labeler_address: str = "127.0.0.1:50052"
    trainer_address: str = "127.0.0.1:50053"
    # Largest gRPC message any server or channel accepts (a 10 MB photo plus framing).
    grpc_max_message_bytes: int = Field(12 * 1024 * 1024, ge=1024 * 1024)

    # One shared token between our own services.
    internal_token: str = ""
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
    # The trainer writes nutrition archives here; TorchServe serves them.
    model_store_dir: Path = Path("model_store/mar")

    # ChatGPT: the gateway queues labels and the labeler asks; both name the model.
    use_chatgpt: bool = True
    openai_model: str = "gpt-4o-mini"
    # The labeler's call, and the gateway's deadline on it (LABELER_TIMEOUT_S must outlast it).
    openai_timeout_s: float = Field(30.0, gt=0)
    openai_max_retries: int = Field(3, ge=0, le=10)
    # What ChatGPT may cost per UTC day (0 = no limit); at the limit labels wait for midnight UTC. The
    # gateway holds labels back; the labeler refuses to start if it cannot price its calls.
    chatgpt_daily_budget_usd: float = Field(0.0, ge=0)
    # When ChatGPT is asked (gateway/label_policy.py): `always` (the original design) or `uncertain`
    # (only unsure photos, dishes with few labels, wide ranges, plus an exploration share). The
    # trainer weighs the explored labels by this share.
    label_policy: Literal["always", "uncertain"] = "always"
    label_policy_exploration: float = Field(0.05, ge=0, le=1)

    # TorchServe, as the gateway, the trainer and its own start-up reach it.
    torchserve_endpoints: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:7070"])
    torchserve_management: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:7071"])
    # Inference is balanced over the replicas by gRPC (round_robin); empty = the replicas above, which
    # must then be IP addresses if several; else one DNS name that resolves to each (dns:///host:port).
    torchserve_inference_target: str = ""
    torchserve_timeout_s: float = Field(10.0, gt=0)

    log_level: str = "INFO"
    # text: one readable line per event; json: one JSON object per line, with the request or run id.
    log_format: Literal["text", "json"] = "text"

    _csv = field_validator("torchserve_endpoints", "torchserve_management", mode="before")(split_csv)

    @field_validator("s3_endpoint_url")
    @classmethod
    def _empty_s3_endpoint_is_aws(cls, value: str | None) -> str | None:
        return value or None

    @field_validator(
        "internal_tls_cert_file",
        "internal_tls_key_file",
        "internal_tls_ca_file",
        "internal_tls_client_cert_file",
        "internal_tls_client_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_no_internal_tls_file(cls, value: object) -> object:
        return value or None

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
