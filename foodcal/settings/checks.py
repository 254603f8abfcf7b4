"""What every settings class shares to say what is wrong: SettingsError, and the file and host checks.

A service calls the checks on what it needs once it starts (`settings.require_internal_token()`, …);
a failed check raises SettingsError with a message that names the setting.
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


class InternalChecks:
    """Methods of `CommonSettings` (common.py): the token and TLS between our own services."""

    def require_internal_token(self) -> None:
        if len(self.internal_token) < 8:
            raise SettingsError("INTERNAL_TOKEN: set a token of at least 8 characters shared by our services")

    def require_internal_tls_server(self) -> None:
        """The labeler and the trainer: their certificate and key, and a CA to check callers against."""
        require_tls_pair(
            {
                "INTERNAL_TLS_CERT_FILE": self.internal_tls_cert_file,
                "INTERNAL_TLS_KEY_FILE": self.internal_tls_key_file,
            }
        )
        require_file("INTERNAL_TLS_CA_FILE", self.internal_tls_ca_file)
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
        require_file("INTERNAL_TLS_CA_FILE", self.internal_tls_ca_file)
        require_file("INTERNAL_TLS_CERT_FILE", self.internal_tls_cert_file)
        client = {
            "INTERNAL_TLS_CLIENT_CERT_FILE": self.internal_tls_client_cert_file,
            "INTERNAL_TLS_CLIENT_KEY_FILE": self.internal_tls_client_key_file,
        }
        if any(client.values()) and not (self.internal_tls_ca_file or self.internal_tls_cert_file):
            raise SettingsError(
                "INTERNAL_TLS_CLIENT_CERT_FILE: a client certificate is for TLS; set INTERNAL_TLS_CA_FILE, "
                "the CA our services' certificates chain to"
            )
        require_tls_pair(client)


def require_tls_pair(files: dict[str, Path | None]) -> None:
    """A certificate and its key: both or neither, and files that exist."""
    if any(files.values()) and not all(files.values()):
        missing = " and ".join(name for name, path in files.items() if not path)
        raise SettingsError(f"{missing}: TLS needs both the certificate and its key")
    for name, path in files.items():
        require_file(name, path)


def require_file(name: str, path: Path | None) -> None:
    if path is not None and not path.is_file():
        raise SettingsError(f"{name}: no such file: {path}")
