"""Who is calling the gateway, and what that caller may do.

Two roles: a client (API_TOKENS) may analyze photos, read, list, correct, export and delete its
own samples, and read its own stats and day totals; an admin (ADMIN_TOKENS) may also train, list
and roll back versions, read or delete every sample, and read the global stats. Every
GatewayService method not named in CLIENT_METHODS needs an admin token, so a method added later is
closed until someone opens it on purpose.

A caller's identity is a hash of its token (never the token): it is stored with each sample.
Rotating a token therefore gives the client a new identity; its old samples stay visible to admins.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from foodcal.rpc.errors import abort
from foodcal.rpc.grpc_server import OPEN_METHOD_PREFIXES, bearer_token, deny_like, token_matches
from gateway.shield import shield

log = logging.getLogger(__name__)

SERVICE_PREFIX = "/foodcal.v1.GatewayService/"
CLIENT_METHODS = frozenset(
    {
        "AnalyzeMeal",
        "GetSample",
        "ListSamples",
        "CorrectSample",
        "GetStats",
        "GetMeal",
        "GetDailyTotals",
        "ExportSamples",
        "DeleteSample",
    }
)


def identity_of(token: str) -> str:
    """What is stored with a sample: a hash of the token, never the token itself."""
    return "client-" + hashlib.sha256(token.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Caller:
    identity: str
    admin: bool

    @property
    def owner_filter(self) -> str | None:
        """The owner a query is restricted to; None for an admin, who sees every sample."""
        return None if self.admin else self.identity


class Roles:
    """Maps a bearer token to a Caller, comparing in constant time against every token."""

    def __init__(self, client_tokens: Sequence[str], admin_tokens: Sequence[str]) -> None:
        self.client_tokens, self.admin_tokens = tuple(client_tokens), tuple(admin_tokens)

    def caller(self, token: str | None) -> Caller | None:
        if token is None:
            return None
        admin = token_matches(token, self.admin_tokens)
        client = token_matches(token, self.client_tokens)
        if not (admin or client):
            return None
        return Caller(identity_of(token), admin)

    def of_context(self, context: grpc.aio.ServicerContext) -> Caller:
        """The caller of an RPC the interceptor let through (so its token is valid)."""
        caller = self.caller(bearer_token(context.invocation_metadata()))
        if caller is None:  # pragma: no cover  (the interceptor refused it already)
            raise PermissionError("no valid token on a call the interceptor let through")
        return caller


class RoleInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED without a valid token; PERMISSION_DENIED for an admin method with a client's."""

    def __init__(self, roles: Roles, limits=None) -> None:
        """`limits`: a RequestLimits (gateway/request_limits.py) each allowed call passes first."""
        self.roles, self.limits = roles, limits

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        caller = self.roles.caller(bearer_token(handler_call_details.invocation_metadata))
        if caller is None:
            log.warning("refused %s: missing or invalid token", method)
            return deny_like(handler)
        name = method.removeprefix(SERVICE_PREFIX)
        if caller.admin or (method.startswith(SERVICE_PREFIX) and name in CLIENT_METHODS):
            if self.limits is not None and method.startswith(SERVICE_PREFIX):
                handler = self.limits.wrap(handler, name, caller)
            return shield(handler)
        log.warning("refused %s for %s: needs an admin token", method, caller.identity)
        return deny_like(handler, _admin_required(name))


def _admin_required(name: str):
    async def refuse(context: grpc.aio.ServicerContext) -> None:
        await abort(
            context,
            grpc.StatusCode.PERMISSION_DENIED,
            f"{name} needs an admin token (ADMIN_TOKENS); this is a client token (API_TOKENS)",
            "ADMIN_ROLE_REQUIRED",
            method=name,
            required_role="admin",
        )

    return refuse
