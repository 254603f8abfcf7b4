"""A retry of AnalyzeMeal with the same request_id returns the first answer and stores nothing."""

import asyncio
import dataclasses

import grpc
import pytest

from foodcal.rpc.errors import details_of, error_info
from foodcal.v1 import gateway_pb2
from gateway.idempotency import RequestIds
from tests.conftest import API_TOKEN, OTHER_CLIENT_TOKEN, auth, photo
from tests.openai_stub import answer

CLIENT = auth(API_TOKEN)


def request(request_id: str, shade: int = 0) -> gateway_pb2.AnalyzeMealRequest:
    return gateway_pb2.AnalyzeMealRequest(image=photo((shade, 40, 40)), request_id=request_id)


async def test_a_retry_with_the_same_request_id_returns_the_first_answer(system):
    app = await system(services=("gateway",), use_chatgpt=False)
    first = await app.gateway.AnalyzeMeal(request("meal-1"), metadata=CLIENT, timeout=60)
    again = await app.gateway.AnalyzeMeal(request("meal-1"), metadata=CLIENT, timeout=60)
    assert again == first and app.sample_count() == 1
    # ids belong to a client: another client's "meal-1" is its own request
    theirs = await app.gateway.AnalyzeMeal(request("meal-1"), metadata=auth(OTHER_CLIENT_TOKEN), timeout=60)
    assert theirs.sample_id != first.sample_id and app.sample_count() == 2
    # without an id, the same photo twice is two samples, as before
    for _ in range(2):
        await app.gateway.AnalyzeMeal(request(""), metadata=CLIENT, timeout=60)
    assert app.sample_count() == 4


async def test_a_request_id_reused_for_another_photo_is_refused(system):
    app = await system(services=("gateway",), use_chatgpt=False)
    await app.gateway.AnalyzeMeal(request("meal-2"), metadata=CLIENT, timeout=60)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.AnalyzeMeal(request("meal-2", shade=99), metadata=CLIENT, timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(details_of(raised.value)).reason == "REQUEST_ID_REUSED"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.AnalyzeMeal(request("x" * 129), metadata=CLIENT, timeout=60)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert app.sample_count() == 1


async def test_the_sample_and_its_answer_for_the_request_id_are_stored_together_or_not_at_all(
    system, monkeypatch
):
    app = await system(services=("gateway",), use_chatgpt=False)

    def lost(*args, **kwargs):
        raise RuntimeError("the answer could not be written")

    with monkeypatch.context() as patched:  # the write of the answer fails
        patched.setattr(RequestIds, "record", staticmethod(lost))
        with pytest.raises(grpc.aio.AioRpcError):
            await app.gateway.AnalyzeMeal(request("meal-3"), metadata=CLIENT, timeout=60)
    assert app.sample_count() == 0  # no sample without its answer: a retry cannot store a second
    first = await app.gateway.AnalyzeMeal(request("meal-3"), metadata=CLIENT, timeout=60)
    again = await app.gateway.AnalyzeMeal(request("meal-3"), metadata=CLIENT, timeout=60)
    assert again == first and app.sample_count() == 1


async def test_a_retry_after_a_timeout_or_while_the_first_call_runs_stores_one_sample(system, openai_stub):
    openai_stub.reset(default=dataclasses.replace(answer(), delay_s=2.0))  # ChatGPT takes 2 s
    app = await system()
    try:  # the client gives up after 0.3 s; the gateway finishes the call for its retry
        first = await app.gateway.AnalyzeMeal(request("slow-1"), metadata=CLIENT, timeout=0.3)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        first = None
    retried = await app.gateway.AnalyzeMeal(request("slow-1"), metadata=CLIENT, timeout=60)
    assert first is None or retried == first
    assert app.sample_count() == 1

    # two calls with one id at once: the second waits for the first's answer
    both = await asyncio.gather(
        *(app.gateway.AnalyzeMeal(request("slow-2", 7), metadata=CLIENT, timeout=60) for _ in range(2))
    )
    assert both[0] == both[1] and app.sample_count() == 2


def test_claims_on_both_databases(db):
    from datetime import timedelta

    from foodcal.store import AnalyzeRequest
    from gateway.idempotency import STALE_CLAIM_S, Outcome, RequestIds

    ids = RequestIds(db)
    assert ids.claim("a", "r", "d1").outcome is Outcome.NEW
    assert ids.claim("a", "r", "d1").outcome is Outcome.RUNNING
    assert ids.claim("a", "r", "d2").outcome is Outcome.OTHER_REQUEST
    assert ids.claim("b", "r", "d1").outcome is Outcome.NEW  # another client
    ids.release("a", "r")  # the call failed: a retry does the work
    assert ids.claim("a", "r", "d1").outcome is Outcome.NEW
    with db.transaction() as connection:
        ids.record(connection, "a", "r", gateway_pb2.AnalyzeMealResponse(sample_id="s1"))
    claim = ids.claim("a", "r", "d1")
    assert claim.outcome is Outcome.ANSWERED
    assert gateway_pb2.AnalyzeMealResponse.FromString(claim.response).sample_id == "s1"
    ids.release("a", "r")  # an answered id is never released
    assert ids.claim("a", "r", "d1").outcome is Outcome.ANSWERED
    with db.session() as session:  # the gateway running "b" died long ago
        row = session.get(AnalyzeRequest, ("b", "r"))
        row.claimed_at = row.claimed_at - timedelta(seconds=STALE_CLAIM_S + 1)
        session.add(row)
    assert ids.claim("b", "r", "d1").outcome is Outcome.NEW
    assert ids.claim("b", "r", "d1").outcome is Outcome.RUNNING


def test_expired_ids_are_claimed_again_and_swept_at_most_once_a_minute(db, monkeypatch):
    from datetime import timedelta

    from sqlmodel import select

    from foodcal.store import AnalyzeRequest
    from gateway import idempotency
    from gateway.idempotency import RETENTION_S, Outcome, RequestIds

    def age(owner: str) -> None:
        with db.session() as session:
            row = session.get(AnalyzeRequest, (owner, "r"))
            row.created_at = row.created_at - timedelta(seconds=RETENTION_S + 1)
            session.add(row)

    def owners() -> list[str]:
        with db.session() as session:
            return sorted(session.exec(select(AnalyzeRequest.owner)).all())

    ids, clock = RequestIds(db), [1000.0]
    monkeypatch.setattr(idempotency.time, "monotonic", lambda: clock[0])
    for owner in ("a", "b", "c"):
        ids.claim(owner, "r", "d1")
        with db.transaction() as connection:
            ids.record(connection, owner, "r", gateway_pb2.AnalyzeMealResponse(sample_id=f"s-{owner}"))
    age("a")
    assert ids.claim("a", "r", "d1").outcome is Outcome.NEW  # expired: a new request, not an answer
    age("b")
    assert ids.claim("c", "r", "d1").outcome is Outcome.ANSWERED
    assert owners() == ["a", "b", "c"]  # swept at the first claim only, before "b" expired
    clock[0] += idempotency.PURGE_INTERVAL_S
    assert ids.claim("c", "r", "d1").outcome is Outcome.ANSWERED
    assert owners() == ["a", "c"]  # the next sweep, a minute later, removed "b"


async def test_retries_waiting_on_a_running_id_are_capped_counted_and_do_not_poll(system, monkeypatch):
    """Ten retries while the first call is held: the calls bucket (burst 6) refuses 4, the cap
    on waiters per client refuses 2 more, 4 wait on the running call itself, not on the database."""
    from gateway.analyze import Analyzer
    from gateway.idempotency import MAX_WAITERS_PER_CLIENT

    release, real_analyze = asyncio.Event(), Analyzer.analyze

    async def held(*args, **kwargs):
        await release.wait()
        return await real_analyze(*args, **kwargs)

    claims, real_claim = [], RequestIds.claim

    def counting(*args):
        claims.append(args[2])
        return real_claim(*args)

    monkeypatch.setattr(Analyzer, "analyze", held)
    monkeypatch.setattr(RequestIds, "claim", counting)
    app = await system(services=("gateway",), use_chatgpt=False, client_call_burst=6)
    call = lambda: app.gateway.AnalyzeMeal(request("held"), metadata=CLIENT, timeout=60)  # noqa: E731
    first = asyncio.ensure_future(call())
    while not claims:
        await asyncio.sleep(0.01)
    retries = [asyncio.ensure_future(call()) for _ in range(10)]
    await asyncio.wait_for(_until(lambda: sum(r.done() for r in retries) == 6), 30)
    reasons = sorted(error_info(details_of(r.exception())).reason for r in retries if r.done())
    assert reasons == ["RATE_LIMITED"] * 4 + ["TOO_MANY_WAITING"] * 2
    assert MAX_WAITERS_PER_CLIENT == 4
    await asyncio.sleep(1.0)  # waiters that polled the database would claim again meanwhile
    assert len(claims) == 11
    release.set()
    answer = await first
    assert [await r for r in retries if not r.done() or not r.exception()] == [answer] * 4
    assert app.sample_count() == 1


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)
