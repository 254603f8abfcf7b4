"""The attacks of issue 30 that try to stall the gateway (items 1-4), for tests/abuse.py.

Each returns an Outcome: what was tried, the status codes (with their ErrorInfo reason) the attacker
got, the sample ids it was answered with, and checks of its own; the suite adds the honest
clients' latency and the store and money checks around it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc

from foodcal.rpc.errors import details_of, error_info
from foodcal.rpc.grpc_server import message_size_options
from foodcal.store import Rollout, RolloutMode, RolloutState, Sample
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from gateway.auth import identity_of
from tests.abuse_load import numbered_photo
from tests.abuse_system import Target

SERVICE = "/foodcal.v1.GatewayService/"


@dataclass
class Outcome:
    name: str
    tried: str
    codes: Counter = field(default_factory=Counter)
    told: set[str] = field(default_factory=set)  # sample ids the attacker was answered with
    checks: dict[str, bool] = field(default_factory=dict)  # what must hold, and whether it did
    facts: list[str] = field(default_factory=list)  # what else was seen
    window: tuple[float, float] | None = None  # when the attack was on, where not all of run()
    after: Callable[[], Awaitable[None]] | None = None  # checks once the load is paused and settled
    skipped: str = ""


def code_of(error: grpc.aio.AioRpcError) -> str:
    details = details_of(error)
    info = error_info(details) if details is not None else None
    return f"{error.code().name}/{info.reason}" if info is not None else error.code().name


@contextlib.asynccontextmanager
async def attacker(target: Target, token: str):
    """A stub for `token` that may send 32 MB (more than the gateway takes), and a raw-bytes caller."""
    channel = grpc.aio.insecure_channel(target.gateway, options=message_size_options(32 * 1024 * 1024))
    metadata = (("authorization", f"Bearer {token}"),)

    def raw(rpc: str, response):
        method = channel.unary_unary(SERVICE + rpc, response_deserializer=response.FromString)
        return lambda payload, timeout=10.0: method(payload, metadata=metadata, timeout=timeout)

    try:
        yield gateway_pb2_grpc.GatewayServiceStub(channel), metadata, raw
    finally:
        await channel.close()


async def counted(codes: Counter, call: Awaitable):
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        codes[code_of(error)] += 1
        return None
    codes["OK"] += 1
    return response


async def flood(codes: Counter, send: Callable[[int], Awaitable], seconds: float, workers: int = 4) -> None:
    """`workers` loops sending `send(i)` back to back for `seconds`."""
    end = time.monotonic() + seconds

    async def loop(first: int) -> None:
        for i in range(first, 10**9, workers):
            if time.monotonic() > end:
                return
            await counted(codes, send(i))

    await asyncio.gather(*(loop(w) for w in range(workers)))


def attack_photo(n: int) -> bytes:
    return numbered_photo(n, (40, 160, 90))  # never an honest client's photo: another colour


async def correct_flood(target: Target, seconds: float) -> Outcome:
    out = Outcome("1 CorrectSample flood", "CorrectSample x 4 loops: 200,000 empty items / a 12 MB message")
    async with attacker(target, "abuse-flood") as (stub, metadata, raw):
        own = await stub.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=attack_photo(1)), metadata=metadata)
        out.told.add(own.sample_id)
        totals = common_pb2.Nutrition(calories_kcal=500, proteins_g=20, fats_g=20, carbs_g=50)
        many = gateway_pb2.CorrectSampleRequest(sample_id=own.sample_id, nutrition=totals)
        many.items.extend(common_pb2.FoodItem() for _ in range(200_000))
        huge = gateway_pb2.CorrectSampleRequest(sample_id=own.sample_id, nutrition=totals)
        huge.items.extend(common_pb2.FoodItem(name="x" * 1000, grams=1) for _ in range(11_900))
        payloads = [many.SerializeToString(), huge.SerializeToString()]
        out.facts.append(f"messages of {len(payloads[0]) / 1e6:.1f} MB and {len(payloads[1]) / 1e6:.1f} MB")
        correct = raw("CorrectSample", gateway_pb2.CorrectSampleResponse)
        await flood(out.codes, lambda i: correct(payloads[i % 2]), seconds)
        answer = await stub.GetSample(
            gateway_pb2.GetSampleRequest(sample_id=own.sample_id), metadata=metadata
        )
        out.checks["the sample stays uncorrected"] = not answer.sample.corrected
    return out


async def oversized_notes(target: Target, seconds: float) -> Outcome:
    notes = {
        "1 MB": "n" * 1_000_000,
        "11 MB": "n" * 11_000_000,
        "501 chars": "n" * 501,
        "control": "\x00" * 1001,
    }
    out = Outcome("2 oversized notes", f"AnalyzeMeal x 4 loops with notes of {', '.join(notes)}")
    async with attacker(target, "abuse-notes") as (_, _metadata, raw):
        payloads = [
            gateway_pb2.AnalyzeMealRequest(image=attack_photo(2), note=note).SerializeToString()
            for note in notes.values()
        ]
        analyze = raw("AnalyzeMeal", gateway_pb2.AnalyzeMealResponse)
        await flood(out.codes, lambda i: analyze(payloads[i % len(payloads)]), seconds)
    out.checks["no sample stored for the notes"] = (
        target.count(Sample.owner == identity_of("abuse-notes")) == 0
    )
    return out


async def duplicate_retries(target: Target, seconds: float, copies: int = 300) -> Outcome:
    slow_s = 3.0
    out = Outcome(
        "3 duplicate retries",
        f"{copies} retries of a request_id still running (ChatGPT answers it in {slow_s:.0f} s)",
    )
    target.rules(**{"abuse-dup-slow": {"delay_s": slow_s}})
    request = gateway_pb2.AnalyzeMealRequest(image=attack_photo(3), note="abuse-dup-slow", request_id="dup-1")
    async with attacker(target, "abuse-dup") as (stub, metadata, _):

        def send():
            return counted(out.codes, stub.AnalyzeMeal(request, metadata=metadata, timeout=30))

        first = asyncio.create_task(send())
        await asyncio.sleep(0.5)
        answers = await asyncio.gather(*(send() for _ in range(copies)), first)
    target.rules()
    out.told = {answer.sample_id for answer in answers if answer is not None}
    out.checks["one sample for the id"] = len(out.told) == 1
    out.checks["one stored"] = target.count(Sample.owner == identity_of("abuse-dup")) == 1
    return out


async def slow_challenger(target: Target, seconds: float, slow_ms: int = 3000) -> Outcome:
    """A shadow challenger TorchServe answers only after `slow_ms`: it batches up to 64 requests and
    waits that long to fill the batch. Only the honest clients' AnalyzeMeal are measured."""
    from model_store import archive, checkpoint
    from model_store.build import reference_model
    from model_store.torchserve_client import ModelServerError, TorchServeClient
    from trainer.swap_lock import SwapLock

    out = Outcome(
        "4 slow challenger", f"a shadow challenger that answers after {slow_ms} ms (ROLLOUT=shadow)"
    )
    if target.model_store is None or not target.torchserve:
        out.skipped = "no model store to build a challenger in"
        return out
    checkpoint_dir = target.model_store.parent / "checkpoints" / "food101"
    mar = archive.nutrition_mar_name(1)
    version = checkpoint.read_identity(checkpoint_dir)["version"]
    model = reference_model(checkpoint_dir)
    await asyncio.to_thread(
        archive.build_nutrition_mar, model, 1, target.model_store / mar, classifier_version=version
    )
    torchserve, lock = TorchServeClient(*target.torchserve), SwapLock(target.db)
    replica = torchserve.replicas[0]
    # Registered and recorded under the trainer's swap lock, as trainer/versions.py add_challenger
    # does: the trainer's reconcile would drop a version it finds registered but not recorded.
    async with lock.held("the abuse suite's slow challenger", 60):
        await torchserve.register(replica, mar, batch_size=64, max_batch_delay_ms=slow_ms)
        with target.db.session() as session:
            row = Rollout(
                version=1, baseline_version=0, mode=RolloutMode.SHADOW, state=RolloutState.CHALLENGER
            )
            session.add(row)
            row_id = row.id
    await asyncio.sleep(2.5)  # gateway/challenger.py REFRESH_S: every gateway has read it
    started = time.monotonic()
    await asyncio.sleep(seconds)
    out.window = (started, time.monotonic())
    async with lock.held("retiring the abuse suite's slow challenger", 60):
        with target.db.session() as session:
            row = session.get(Rollout, row_id)
            row.state, row.ended_at = RolloutState.RETIRED, datetime.now(UTC)
            session.add(row)
    await asyncio.sleep(2.5 + slow_ms / 1000)  # no gateway asks it any more, its last batch is done
    async with lock.held("unregistering the abuse suite's slow challenger", 60):
        with contextlib.suppress(ModelServerError):  # the trainer's reconcile may have dropped it
            await torchserve.unregister(replica, "nutrition", "1")
    await torchserve.close()
    out.facts.append(f"challenger v1 live for {seconds:.0f} s, then retired")
    return out
