"""Prometheus metrics of every service, and the one-line hooks the services call.

Each service serves `/metrics` on its own port (`GATEWAY_METRICS_PORT`, `LABELER_METRICS_PORT`,
`TRAINER_METRICS_PORT`). Names follow Prometheus conventions: `foodcal_` prefix, counters end in
`_total`, durations are `_seconds`. Labels have bounded values (models come from settings, outcomes
and kinds from fixed sets), and every known label combination starts at 0, so a dashboard query
returns 0 rather than nothing before the first event.

Gauges that describe the database (label queue depth, the served version) are read from it at
scrape time by the collectors in `foodcal.rpc.metrics_collectors`, so they are right whichever replica
changed the rows; they are re-exported here, the one module the services import.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.registry import Collector

from foodcal.rpc.metrics_collectors import LabelQueueCollector, ServedVersionCollector
from foodcal.rpc.metrics_collectors import aware as _aware
from foodcal.store import Database, RunStatus, TrainingRunRow

# Seconds; from a health check (~1 ms) to a ChatGPT call with retries (up to LABELER_TIMEOUT_S).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RUN_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)

# -- gRPC (recorded by foodcal.rpc.grpc_metrics.MetricsInterceptor) --------------------------------------

GRPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")
GRPC_STARTED = Counter("foodcal_grpc_server_started_total", "RPCs started on the server.", GRPC_LABELS)
GRPC_HANDLED = Counter(
    "foodcal_grpc_server_handled_total",
    "RPCs completed on the server, by gRPC status code.",
    (*GRPC_LABELS, "grpc_code"),
)
GRPC_HANDLING = Histogram(
    "foodcal_grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, on the server.",
    GRPC_LABELS,
    buckets=LATENCY_BUCKETS,
)

# -- labeler ------------------------------------------------------------------------------------------

CHATGPT_CALLS = Counter(
    "foodcal_chatgpt_calls_total",
    "ChatGPT calls by the model asked and outcome (answered, refused or a failure reason).",
    ("model", "outcome"),
)
CHATGPT_DURATION = Histogram(
    "foodcal_chatgpt_call_duration_seconds",
    "Duration of one ChatGPT call, retries included.",
    ("model",),
    buckets=LATENCY_BUCKETS,
)
CHATGPT_TOKENS = Counter(
    "foodcal_chatgpt_tokens_total",
    "Tokens paid for, by model and kind (prompt, completion).",
    ("model", "kind"),
)
CHATGPT_COST = Counter(
    "foodcal_chatgpt_cost_usd_total",
    "Estimated cost of ChatGPT calls in US dollars (prices in foodcal/settings.py).",
    ("model",),
)
LABEL_CACHE_HITS = Counter(
    "foodcal_label_cache_hits_total", "Labels answered from the cache instead of a ChatGPT call.", ("model",)
)

# -- trainer -------------------------------------------------------------------------------------------

RUN_OUTCOMES = (RunStatus.DEPLOYED, RunStatus.CHALLENGER, RunStatus.NOT_DEPLOYED, RunStatus.FAILED)
TRAINING_RUNS = Counter("foodcal_training_runs_total", "Finished training runs by outcome.", ("outcome",))
TRAINING_RUN_DURATION = Histogram(
    "foodcal_training_run_duration_seconds",
    "Training run duration (start to deploy decision) by outcome.",
    ("outcome",),
    buckets=RUN_BUCKETS,
)
SWAP_KINDS, SWAP_OUTCOMES = ("deploy", "rollback"), ("ok", "failed")
MODEL_SWAPS = Counter(
    "foodcal_model_swaps_total",
    "Nutrition model swaps on TorchServe: kind deploy (a run's new version) or rollback (RollbackModel).",
    ("kind", "outcome"),
)
MODEL_SWAP_DURATION = Histogram(
    "foodcal_model_swap_duration_seconds", "Duration of a model swap, lock wait included.", ("kind",)
)
ROLLOUT_DECISIONS = ("challenger", "promoted", "retired", "deployed", "rolled_back", "superseded")
ROLLOUTS = Counter(
    "foodcal_rollout_decisions_total",
    "Decisions about versions on live traffic (trainer/rollout.py): rolled_back means live labels "
    "showed the served version clearly worse than the one it replaced.",
    ("decision",),
)

SERVICE_INFO = Gauge(
    "foodcal_service_info", "Always 1; names the foodcal service behind this endpoint.", ("service",)
)


def _init_trainer_labels() -> None:
    for outcome in RUN_OUTCOMES:
        TRAINING_RUNS.labels(outcome.value)
        TRAINING_RUN_DURATION.labels(outcome.value)
    for decision in ROLLOUT_DECISIONS:
        ROLLOUTS.labels(decision)
    for kind in SWAP_KINDS:
        MODEL_SWAP_DURATION.labels(kind)
        for outcome in SWAP_OUTCOMES:
            MODEL_SWAPS.labels(kind, outcome)


def _init_labeler_labels(model: str) -> None:
    for outcome in ("answered", "refused"):
        CHATGPT_CALLS.labels(model, outcome)
    CHATGPT_DURATION.labels(model)
    for kind in ("prompt", "completion"):
        CHATGPT_TOKENS.labels(model, kind)
    CHATGPT_COST.labels(model)
    LABEL_CACHE_HITS.labels(model)


# -- hooks: one line each in the code that does the work ---------------------------------------------


def chatgpt_call(ask: Callable) -> Callable:
    """Decorates `ChatGPT.ask`: counts the call, its outcome, tokens, cost and duration."""

    @functools.wraps(ask)
    async def wrapper(self, *args, **kwargs):
        model, start, usage, outcome = self.model, time.perf_counter(), None, "error"
        try:
            reply = await ask(self, *args, **kwargs)
            usage, outcome = reply.usage, "answered" if reply.answer is not None else "refused"
            return reply
        except Exception as error:
            usage, outcome = getattr(error, "usage", None), getattr(error, "reason", "error")
            raise
        finally:
            CHATGPT_DURATION.labels(model).observe(time.perf_counter() - start)
            CHATGPT_CALLS.labels(model, outcome).inc()
            if usage is not None:
                CHATGPT_TOKENS.labels(model, "prompt").inc(usage.prompt_tokens)
                CHATGPT_TOKENS.labels(model, "completion").inc(usage.completion_tokens)
                CHATGPT_COST.labels(model).inc(usage.cost_usd)

    return wrapper


def label_cache_hit(model: str) -> None:
    LABEL_CACHE_HITS.labels(model).inc()


def training_run_finished(run: TrainingRunRow) -> None:
    outcome = str(getattr(run.status, "value", run.status))
    TRAINING_RUNS.labels(outcome).inc()
    if run.finished_at is not None:
        seconds = (_aware(run.finished_at) - _aware(run.created_at)).total_seconds()
        TRAINING_RUN_DURATION.labels(outcome).observe(seconds)


def model_swap(kind: str) -> Callable:
    """Decorates an async swap (`VersionStore.deploy`, `.rollback`): counts it by outcome and times it."""

    def decorate(swap: Callable) -> Callable:
        @functools.wraps(swap)
        async def wrapper(*args, **kwargs):
            start, outcome = time.perf_counter(), "failed"
            try:
                result = await swap(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                MODEL_SWAPS.labels(kind, outcome).inc()
                MODEL_SWAP_DURATION.labels(kind).observe(time.perf_counter() - start)

        return wrapper

    return decorate


_COLLECTORS: dict[str, Collector] = {}


def _register(name: str, collector: Collector) -> None:
    """One collector per kind and process; a second registration (tests) replaces the first."""
    old = _COLLECTORS.pop(name, None)
    if old is not None:
        REGISTRY.unregister(old)
    REGISTRY.register(collector)
    _COLLECTORS[name] = collector


def instrument(service: str, db: Database, chatgpt_model: str | None = None) -> None:
    """Register what `service` reports besides its RPCs (called once at start-up)."""
    SERVICE_INFO.labels(service).set(1)
    if service == "labeler" and chatgpt_model:
        _init_labeler_labels(chatgpt_model)
    if service == "gateway":
        _register("label_queue", LabelQueueCollector(db))
    if service == "trainer":
        _init_trainer_labels()
        _register("served_version", ServedVersionCollector(db))


def serve(host: str, port: int, setting: str = "METRICS_PORT") -> int:
    """Serve `/metrics` from a daemon thread; returns the bound port (0 picks a free one)."""
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as error:
        raise SystemExit(f"{setting}: could not bind {host}:{port} for /metrics ({error.strerror})") from None
    return server.server_port
