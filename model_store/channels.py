"""The gRPC channels to TorchServe: one balanced over every replica for inference, and one per
replica for what must reach that replica (management, a self-test, a hot-swap's check).

Balancing and fail-over are gRPC's own: the `round_robin` policy spreads calls over the replicas
it is connected to, and a retry policy sends a prediction that met UNAVAILABLE (a replica going
down) to another one. Only predictions are retried: they are idempotent, management calls are not.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

import grpc

from foodcal.rpc.grpc_server import message_size_options
from foodcal.torchserve import inference_pb2, inference_pb2_grpc, management_pb2_grpc

# gRPC allows at most 5 attempts; the backoff gives a dead replica's connection time to be noticed.
# TorchServe also answers a handler's exception with UNAVAILABLE ("Prediction failed"); a service
# config cannot tell the two apart, so such a request is tried again too (at most 3 more times).
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
PREDICTIONS = {
    "service": inference_pb2.DESCRIPTOR.services_by_name["InferenceAPIsService"].full_name,
    "method": "Predictions",
}


# A restarted TorchServe is reached again within 2 s: gRPC's default reconnect backoff grows to 120 s,
# and the gateway's calls fail fast meanwhile (UNAVAILABLE) although the model server is back.
RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def balanced_target(addresses: Sequence[str]) -> str:
    """One gRPC target for every replica: `ipv4:`/`ipv6:` lists IP literals; one address (maybe a
    DNS name with several records) stays as it is. gRPC cannot list several DNS names."""
    if len(addresses) == 1:
        return addresses[0]
    try:
        hosts = [ipaddress.ip_address(a.rpartition(":")[0].strip("[]")) for a in addresses]
    except ValueError:
        hosts = []
    if not hosts or len({host.version for host in hosts}) != 1:
        raise ValueError(
            f"TORCHSERVE_ENDPOINTS {','.join(addresses)}: gRPC balances over IP addresses or one DNS "
            "name; set TORCHSERVE_INFERENCE_TARGET (e.g. dns:///torchserve:7070) or list IP addresses"
        )
    return f"ipv{hosts[0].version}:{','.join(addresses)}"


def balanced_channel(target: str, max_bytes: int) -> grpc.aio.Channel:
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [PREDICTIONS], "retryPolicy": RETRY_POLICY}],
    }
    options = [
        *message_size_options(max_bytes),
        *RECONNECT,
        ("grpc.service_config", json.dumps(config)),
        # A request larger than the retry buffer (256 KiB by default; photos are larger) is not retried.
        ("grpc.per_rpc_retry_buffer_size", max_bytes),
    ]
    return grpc.aio.insecure_channel(target, options=options)


class Replica:
    """One TorchServe: its management API, and its inference API for calls that must reach it."""

    def __init__(self, inference: str, management: str, max_bytes: int) -> None:
        options = [*message_size_options(max_bytes), *RECONNECT]
        self.address = inference
        self.channels = [grpc.aio.insecure_channel(a, options=options) for a in (inference, management)]
        self.inference = inference_pb2_grpc.InferenceAPIsServiceStub(self.channels[0])
        self.management = management_pb2_grpc.ManagementAPIsServiceStub(self.channels[1])

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
