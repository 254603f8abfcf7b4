"""The model server's settings: which classifier `make models` builds, and how TorchServe serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from foodcal.settings.common import CommonSettings


class ModelSettings(CommonSettings):
    food101_model: str = "nateraw/food"
    # The classifier's arithmetic; `auto` = the fastest that this CPU supports and that passes the
    # accuracy guard against fp32 at `make models` (model_store/precision.py).
    food101_precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    # Which runtime serves it: `openvino` = converted at `make models` (static int8 through NNCF);
    # `auto` = whichever runtime x precision passing the guard is fastest; torch where conversion fails.
    food101_runtime: Literal["auto", "torch", "openvino"] = "auto"
    # The classifier's workers (0 = one per CPU core) and its server-side batching
    # (0 = 8 with one worker, 1 with several: see model_store/build.py).
    food101_workers: int = Field(0, ge=0, le=64)
    food101_batch_size: int = Field(0, ge=0, le=256)
    food101_max_batch_delay_ms: int = Field(10, ge=0, le=1000)

    # TorchServe's own listeners (its gRPC ports are those of TORCHSERVE_ENDPOINTS / _MANAGEMENT).
    torchserve_http_port: int = Field(8080, ge=0, le=65535)
    torchserve_management_http_port: int = Field(8081, ge=0, le=65535)
    torchserve_metrics_port: int = Field(8082, ge=0, le=65535)
    # Where TorchServe's gRPC listeners and REST inference bind (0.0.0.0 inside docker-compose).
    torchserve_bind_host: str = "127.0.0.1"
    torchserve_run_dir: Path = Path("run/torchserve")
