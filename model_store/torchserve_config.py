"""TorchServe's configuration: the listeners, the model store, logging.

Token authorization is turned off on purpose: no listener is ever published. REST management
binds to 127.0.0.1; the gRPC listeners, REST inference and metrics bind to TORCHSERVE_BIND_HOST
(127.0.0.1 by default; the private compose network in docker-compose.yml). Our own services are its
only clients, and the keys TorchServe would write expire and would have to be refreshed by every
client. That binding plus `allowed_urls` restricted to our model store is the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from foodcal.settings import ModelSettings
from model_store.ports import free_port

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <RollingFile name="ts_log" fileName="${env:LOG_LOCATION}/ts_log.log"
                 filePattern="${env:LOG_LOCATION}/ts_log.%i.log.gz">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="TS_METRICS" level="off"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="MODEL_LOG" level="warn"><AppenderRef ref="ts_log"/></Logger>
    <Logger name="org.pytorch.serve" level="warn"><AppenderRef ref="ts_log"/></Logger>
    <Root level="warn"/>
  </Loggers>
</Configuration>
"""


@dataclass
class TorchServeConfig:
    model_store: Path
    run_dir: Path
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    http_port: int = 8080
    management_http_port: int = 8081
    metrics_port: int = 8082
    # gRPC inference/management, REST inference and metrics; REST management stays on loopback.
    bind_host: str = "127.0.0.1"
    max_request_bytes: int = 12 * 1024 * 1024
    heap: str = "512m"
    workers_per_model: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> TorchServeConfig:
        def port(address: str) -> int:
            return int(address.rsplit(":", 1)[1])

        return cls(
            model_store=Path(settings.model_store_dir).resolve(),
            run_dir=Path(settings.torchserve_run_dir).resolve(),
            grpc_inference_port=port(settings.torchserve_endpoints[0]),
            grpc_management_port=port(settings.torchserve_management[0]),
            http_port=settings.torchserve_http_port,
            management_http_port=settings.torchserve_management_http_port,
            metrics_port=settings.torchserve_metrics_port,
            bind_host=settings.torchserve_bind_host,
            max_request_bytes=settings.grpc_max_message_bytes,
        )

    @classmethod
    def on_free_ports(cls, model_store: Path, run_dir: Path) -> TorchServeConfig:
        """Every listener on a free loopback port: tests and benchmarks run beside `make run`."""
        return cls(
            model_store=Path(model_store).resolve(),
            run_dir=Path(run_dir).resolve(),
            grpc_inference_port=free_port(),
            grpc_management_port=free_port(),
            http_port=free_port(),
            management_http_port=free_port(),
            metrics_port=free_port(),
        )

    @property
    def inference_address(self) -> str:
        return f"127.0.0.1:{self.grpc_inference_port}"

    @property
    def management_address(self) -> str:
        return f"127.0.0.1:{self.grpc_management_port}"

    def properties(self) -> str:
        store = str(self.model_store)
        values = {
            "inference_address": f"http://{self.bind_host}:{self.http_port}",
            "management_address": f"http://127.0.0.1:{self.management_http_port}",
            "metrics_address": f"http://{self.bind_host}:{self.metrics_port}",  # read-only, for Prometheus
            "metrics_mode": "prometheus",
            "grpc_inference_address": self.bind_host,
            "grpc_inference_port": str(self.grpc_inference_port),
            "grpc_management_address": self.bind_host,
            "grpc_management_port": str(self.grpc_management_port),
            "model_store": store,
            # Only archives inside our model store may be registered (a regex per entry).
            "allowed_urls": f"file://{store}/[A-Za-z0-9_.-]+\\\\.mar",
            "enable_model_api": "true",
            "disable_token_authorization": "true",
            "max_request_size": str(self.max_request_bytes),
            "max_response_size": str(self.max_request_bytes),
            "default_workers_per_model": str(self.workers_per_model),
            "vmargs": f"-Xmx{self.heap} -XX:+ExitOnOutOfMemoryError",
            "install_py_dep_per_model": "false",
            "disable_system_metrics": "true",
            "async_logging": "true",
            "default_response_timeout": "60",
            **self.extra,
        }
        return "".join(f"{key}={value}\n" for key, value in values.items())
