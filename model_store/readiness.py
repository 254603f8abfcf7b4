"""`python -m model_store.readiness [HOST:PORT ...]`: TorchServe's container probe.

TorchServe answers its own ping long before a model can predict, so ready means what
`model_store.server.wait_until_ready` means: a real prediction through food101 and nutrition on
every replica (`TorchServeClient.self_test`). Exit status 0 when every replica answered, 1
otherwise. Without arguments the replicas are TORCHSERVE_ENDPOINTS / TORCHSERVE_MANAGEMENT from the
settings; with arguments, the given gRPC inference addresses (the management API is not used).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

DEFAULT_TIMEOUT_S = 20.0


async def ready(
    inference: Sequence[str],
    management: Sequence[str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    inference_target: str = "",
) -> tuple[bool, str]:
    """(ready, why not) after one self-test of every replica within `timeout_s`."""
    from model_store.torchserve_client import TorchServeClient

    client = TorchServeClient(inference, management, timeout_s=timeout_s, inference_target=inference_target)
    try:
        await asyncio.wait_for(client.self_test(), timeout=timeout_s)
    except TimeoutError:
        return False, f"no prediction within {timeout_s:g}s"
    except Exception as error:  # any failure means not ready; the probe reports why
        return False, f"{type(error).__name__}: {error}"
    finally:
        await client.close()
    return True, "ready"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_store.readiness", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "addresses", nargs="*", help="gRPC inference HOST:PORT (default TORCHSERVE_ENDPOINTS)"
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline in seconds")
    args = parser.parse_args(argv)
    target = ""
    if args.addresses:
        inference = management = list(args.addresses)  # self_test only uses the inference API
    else:
        from foodcal.settings import load_settings

        settings = load_settings()
        inference, management = settings.torchserve_endpoints, settings.torchserve_management
        target = settings.torchserve_inference_target
    ok, why = asyncio.run(ready(inference, management, args.timeout, target))
    if not ok:
        print(f"torchserve not ready ({', '.join(inference)}): {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
