"""AnalyzeMeal per client token: a bucket in the database, shared by every gateway on it."""

import threading

import grpc
import pytest

from foodcal.rpc.errors import details_of, error_info, retry_info
from foodcal.store import Database
from foodcal.v1 import gateway_pb2
from gateway.rate_limit import RateLimiter
from tests.conftest import ADMIN_TOKEN, API_TOKEN, OTHER_CLIENT_TOKEN, auth, photo


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_one_call_per_interval(db):
    clock = Clock()
    limiter = RateLimiter(db, per_minute=6, burst=3, clock=clock)  # one call per 10 s
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    assert limiter.take("a") == pytest.approx(10.0)
    assert limiter.take("b") is None  # another client has its own bucket
    clock.now += 4
    assert limiter.take("a") == pytest.approx(6.0)  # a refused call spends nothing
    clock.now += 6
    assert limiter.take("a") is None
    assert limiter.take("a") == pytest.approx(10.0)
    clock.now += 3600  # a quiet hour refills the burst, not more
    assert [limiter.take("a") for _ in range(4)][-1] == pytest.approx(10.0)
    assert RateLimiter(db, per_minute=0, burst=1).take("a") is None  # 0 = no limit


def test_gateways_on_one_database_share_each_bucket(database_url):
    """Two processes' worth of engines, many threads at once: exactly the burst gets through."""
    databases = [Database(database_url) for _ in range(2)]
    databases[0].migrate()
    clock = Clock()
    limiters = [RateLimiter(database, per_minute=1, burst=5, clock=clock) for database in databases]
    results: list[float | None] = []
    lock = threading.Lock()

    def spend(limiter: RateLimiter) -> None:
        for _ in range(4):
            outcome = limiter.take("shared")
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=spend, args=(limiters[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for database in databases:
        database.dispose()
    assert len(results) == 24 and results.count(None) == 5


async def test_a_burst_over_the_limit_is_resource_exhausted_with_a_retry_delay(system):
    first = await system(
        services=("gateway",), use_chatgpt=False, client_rate_per_minute=2, client_rate_burst=3
    )
    second = await system(
        services=("gateway",), use_chatgpt=False, client_rate_per_minute=2, client_rate_burst=3
    )
    assert first.settings.database_url == second.settings.database_url  # two gateways, one database

    async def analyze(app, token: str, shade: int):
        request = gateway_pb2.AnalyzeMealRequest(image=photo((shade, 10, 10)))
        return await app.gateway.AnalyzeMeal(request, metadata=auth(token), timeout=60)

    for shade, app in enumerate((first, second, first)):  # the burst, spread over both gateways
        await analyze(app, API_TOKEN, shade)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await analyze(second, API_TOKEN, 9)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "CLIENT_RATE_PER_MINUTE=2" in error.details() and API_TOKEN not in error.details()
    status = details_of(error)
    assert error_info(status).reason == "RATE_LIMITED"
    delay = retry_info(status).retry_delay.ToTimedelta().total_seconds()
    assert 25 < delay <= 30  # one call per 30 s
    assert first.sample_count() == 3  # the refused call stored nothing
    await analyze(first, OTHER_CLIENT_TOKEN, 20)  # another client's bucket is full
    for shade in range(30, 35):  # operators are not limited
        await analyze(second, ADMIN_TOKEN, shade)
