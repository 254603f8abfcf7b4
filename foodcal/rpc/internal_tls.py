"""TLS between our own services (INTERNAL_TLS_*).

The labeler and the trainer serve a certificate and its key; a caller (the gateway, `make backfill`)
trusts INTERNAL_TLS_CA_FILE and needs no service's private key. Mutual TLS: the services require
a client certificate signed by that CA, and callers present INTERNAL_TLS_CLIENT_CERT_FILE.
"""

from __future__ import annotations

import grpc

from foodcal.rpc.grpc_server import ServerTLS


def server_tls(settings) -> ServerTLS | None:
    """The labeler's and the trainer's TLS when INTERNAL_TLS_CERT_FILE / _KEY_FILE are set."""
    settings.require_internal_tls_server()
    if settings.internal_tls_cert_file is None:
        return None
    client_ca = (
        settings.internal_tls_ca_file.read_bytes() if settings.internal_tls_require_client_cert else None
    )
    return ServerTLS(
        settings.internal_tls_cert_file.read_bytes(), settings.internal_tls_key_file.read_bytes(), client_ca
    )


def channel_credentials(settings) -> grpc.ChannelCredentials | None:
    """How a caller reaches our services: None for plaintext (no CA and no certificate set).

    Trusts INTERNAL_TLS_CA_FILE, else INTERNAL_TLS_CERT_FILE itself (a self-signed one): either is
    public, so a caller's environment never needs a service's key.
    """
    settings.require_internal_tls_client()
    trusted = settings.internal_tls_ca_file or settings.internal_tls_cert_file
    if trusted is None:
        return None
    client = (settings.internal_tls_client_cert_file, settings.internal_tls_client_key_file)
    return grpc.ssl_channel_credentials(
        trusted.read_bytes(),
        private_key=client[1].read_bytes() if client[1] else None,
        certificate_chain=client[0].read_bytes() if client[0] else None,
    )


def internal_channel(settings, address: str, options) -> grpc.aio.Channel:
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, credentials, options=options)


def internal_sync_channel(settings, address: str) -> grpc.Channel:
    """The same for a blocking caller (`python -m trainer.backfill`)."""
    credentials = channel_credentials(settings)
    return (
        grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    )
