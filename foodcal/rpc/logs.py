"""One logging setup for every service: one line per event, as text or (`LOG_FORMAT=json`) JSON.

The request id (set for each RPC by `foodcal.rpc.grpc_metrics.MetricsInterceptor`) and the run id (set
for a training run by `bind(run_id=...)`) live in context variables, so every line logged while
serving that request or run carries them, in threads started with `asyncio.to_thread` too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import uuid
from datetime import UTC, datetime

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)
_CONTEXT = {"request_id": REQUEST_ID, "run_id": RUN_ID}


def new_request_id() -> str:
    return uuid.uuid4().hex


def bind(**ids: str) -> None:
    """Tag every later log line of this task (and the threads it starts): `bind(run_id=run.id)`."""
    for key, value in ids.items():
        _CONTEXT[key].set(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, the ids bound, and the error."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in _CONTEXT.items():
            value = var.get()
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(service: str, level: str = "INFO", log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # httpx logs every request line at INFO; the labeler logs its own summary instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
