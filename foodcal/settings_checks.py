"""The start-up checks on what a service needs (tokens, TLS files), mixed into `Settings`.

Each service calls the ones it needs once it starts (`settings.require_api_tokens()`, …); a failed
check raises SettingsError with a message that names the setting.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

# Every token placeholder we ship (.env.example, docker-compose.yml, deploy/k8s/secret.yaml, the
# README) says "change me": anyone who has read this repository knows them.
_EXAMPLE_TOKEN = re.compile(r"change[-_ ]?me", re.IGNORECASE)


def is_example_token(token: str) -> bool:
    return bool(_EXAMPLE_TOKEN.search(token))


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host`; a name other than localhost may resolve anywhere."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(SystemExit):
    """Raised when a setting is missing or malformed; the message names it."""


class StartupChecks:
    """Methods of `Settings` (foodcal/settings.py): they read its fields, and add none."""

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
        """The gateway: an example token is fine on loopback (`make run`), never where others reach."""
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
        _require_tls_pair(
            {
                "GATEWAY_TLS_CERT_FILE": self.gateway_tls_cert_file,
                "GATEWAY_TLS_KEY_FILE": self.gateway_tls_key_file,
            }
        )

    def require_internal_tls_server(self) -> None:
        """The labeler and the trainer: their certificate and key, and a CA to check callers against."""
        _require_tls_pair(
            {
                "INTERNAL_TLS_CERT_FILE": self.internal_tls_cert_file,
                "INTERNAL_TLS_KEY_FILE": self.internal_tls_key_file,
            }
        )
        _require_file("INTERNAL_TLS_CA_FILE", self.internal_tls_ca_file)
        if self.internal_tls_require_client_cert and self.internal_tls_cert_file is None:
            raise SettingsError(
                "INTERNAL_TLS_REQUIRE_CLIENT_CERT: needs TLS; set INTERNAL_TLS_CERT_FILE and "
                "INTERNAL_TLS_KEY_FILE"
            )
        if self.internal_tls_require_client_cert and self.internal_tls_ca_file is None:
            raise SettingsError(
                "INTERNAL_TLS_REQUIRE_CLIENT_CERT: set INTERNAL_TLS_CA_FILE, the CA that signs the callers' "
                "certificates"
            )

    def require_internal_tls_client(self) -> None:
        """A caller of our services: a CA (or their certificate) to trust, and its own optional pair."""
        _require_file("INTERNAL_TLS_CA_FILE", self.internal_tls_ca_file)
        _require_file("INTERNAL_TLS_CERT_FILE", self.internal_tls_cert_file)
        client = {
            "INTERNAL_TLS_CLIENT_CERT_FILE": self.internal_tls_client_cert_file,
            "INTERNAL_TLS_CLIENT_KEY_FILE": self.internal_tls_client_key_file,
        }
        if any(client.values()) and not (self.internal_tls_ca_file or self.internal_tls_cert_file):
            raise SettingsError(
                "INTERNAL_TLS_CLIENT_CERT_FILE: a client certificate is for TLS; set INTERNAL_TLS_CA_FILE, "
                "the CA our services' certificates chain to"
            )
        _require_tls_pair(client)

    def require_internal_token(self) -> None:
        if len(self.internal_token) < 8:
            raise SettingsError("INTERNAL_TOKEN: set a token of at least 8 characters shared by our services")

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


def _require_tls_pair(files: dict[str, Path | None]) -> None:
    """A certificate and its key: both or neither, and files that exist."""
    if any(files.values()) and not all(files.values()):
        missing = " and ".join(name for name, path in files.items() if not path)
        raise SettingsError(f"{missing}: TLS needs both the certificate and its key")
    for name, path in files.items():
        _require_file(name, path)


def _require_file(name: str, path: Path | None) -> None:
    if path is not None and not path.is_file():
        raise SettingsError(f"{name}: no such file: {path}")
