"""`python -m foodcal.ops.healthcheck HOST:PORT`: the container probe for our gRPC services.

Asks the standard gRPC health service (`grpc.health.v1.Health/Check`, open without a token) with a
3 s deadline. Exit status 0 only when the answer is SERVING; 1 for any other status, an error, a
timeout or nothing listening. Used by docker-compose.yml; works as a Kubernetes exec probe too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_TIMEOUT_S = 3.0


def check(
    address: str, service: str = "", timeout_s: float = DEFAULT_TIMEOUT_S, ca_file: str | None = None
) -> tuple[bool, str]:
    """(serving, what was seen) for one Health.Check against `address` (over TLS with `ca_file`)."""
    if ca_file:
        credentials = grpc.ssl_channel_credentials(Path(ca_file).read_bytes())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as error:
            return False, f"{error.code().name}: {error.details() or ''}".strip()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m foodcal.ops.healthcheck", description=__doc__.splitlines()[0]
    )
    parser.add_argument("address", help="HOST:PORT of a gRPC server, e.g. 127.0.0.1:50051")
    parser.add_argument("--service", default="", help="service name to ask about ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline in seconds")
    parser.add_argument("--ca-file", help="a TLS server: trust this PEM certificate (GATEWAY_TLS_CERT_FILE)")
    args = parser.parse_args(argv)
    serving, seen = check(args.address, args.service, args.timeout, args.ca_file)
    if not serving:
        print(f"{args.address}: not serving ({seen})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
