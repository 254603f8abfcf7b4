"""The honest clients of tests/abuse.py: each sends a new photo every ANALYZE_EVERY_S and reads one
of its samples every GET_EVERY_S (within the shipped rate limits), and every call's latency is kept.

Calls leave on a fixed schedule, not after the previous answer, so a stalled gateway shows as
latency instead of as fewer calls. The load pauses while the suite checks the store."""

from __future__ import annotations

import asyncio
import io
import itertools
import random
import time
from dataclasses import dataclass, field

import grpc
from PIL import Image, ImageDraw

from bench.harness import percentile
from foodcal.v1 import gateway_pb2, gateway_pb2_grpc

ANALYZE_EVERY_S = 2.5  # 24 a minute: under CLIENT_RATE_PER_MINUTE=30
GET_EVERY_S = 0.4  # 150 a minute: under CLIENT_CALL_RATE_PER_MINUTE=600
TIMEOUTS_S = {"AnalyzeMeal": 30.0, "GetSample": 10.0}


def numbered_photo(n: int, color: tuple[int, int, int]) -> bytes:
    """A JPEG showing `n` in 20-pixel black and white squares: photos with another `n` (or colour)
    differ even after the labeler shrinks and re-encodes them (nearby flat colours may not)."""
    image = Image.new("RGB", (320, 240), color)
    draw = ImageDraw.Draw(image)
    for bit in range(16):
        draw.rectangle((bit * 20, 0, bit * 20 + 19, 19), fill=(255, 255, 255) if n >> bit & 1 else (0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@dataclass
class Call:
    at: float  # time.monotonic() when sent
    rpc: str
    seconds: float
    code: str


@dataclass
class HonestLoad:
    gateway: str
    tokens: tuple[str, ...]
    calls: list[Call] = field(default_factory=list)
    told: set[str] = field(default_factory=set)  # every sample id a client was answered with
    photos: list[bytes] = field(default_factory=list)  # what they sent, for the duplicate probe
    _running: asyncio.Event = field(default_factory=asyncio.Event)
    _in_flight: int = 0
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _calls_in_flight: set[asyncio.Task] = field(default_factory=set)
    _counter: itertools.count = field(default_factory=itertools.count)

    async def __aenter__(self) -> HonestLoad:
        self.channel = grpc.aio.insecure_channel(self.gateway)
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self._running.set()
        for token in self.tokens:
            metadata = (("authorization", f"Bearer {token}"),)
            mine: list[str] = []  # this client's samples

            def analyze(m=metadata, s=mine):
                return self._analyze(m, s)

            def get(m=metadata, s=mine):
                return self._get(m, s)

            self._tasks += [
                asyncio.create_task(self._every(ANALYZE_EVERY_S, analyze)),
                asyncio.create_task(self._every(GET_EVERY_S, get)),
            ]
        return self

    async def __aexit__(self, *exc) -> None:
        for task in [*self._tasks, *self._calls_in_flight]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._calls_in_flight, return_exceptions=True)
        await self.channel.close()

    async def pause(self) -> None:
        """No honest call in flight once this returns, none sent until resume()."""
        self._running.clear()
        while self._in_flight:
            await asyncio.sleep(0.05)

    def resume(self) -> None:
        self._running.set()

    def summary(self, start: float, end: float, rpc: str) -> dict:
        """p50/p99 in ms of the calls sent in [start, end), and how many failed."""
        inside = [call for call in self.calls if start <= call.at < end and call.rpc == rpc]
        ms = [call.seconds * 1000 for call in inside if call.code == "OK"]
        errors = sorted({call.code for call in inside if call.code != "OK"})
        return {
            "n": len(inside),
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "failed": len(inside) - len(ms),
            "errors": errors,
        }

    async def _every(self, interval_s: float, call) -> None:
        await asyncio.sleep(random.uniform(0, interval_s))  # the clients do not move in step
        next_at = time.monotonic()
        while True:
            await self._running.wait()
            next_at = max(next_at + interval_s, time.monotonic() - interval_s)  # no burst after a pause
            task = asyncio.create_task(self._timed(call))
            self._calls_in_flight.add(task)  # a reference, so it is not collected mid-call
            task.add_done_callback(self._calls_in_flight.discard)
            await asyncio.sleep(max(next_at - time.monotonic(), 0))

    async def _timed(self, call) -> None:
        self._in_flight += 1
        try:
            await call()
        finally:
            self._in_flight -= 1

    async def _analyze(self, metadata, mine: list[str]) -> None:
        n = next(self._counter)
        image = numbered_photo(n, (200, 80, 40))
        request = gateway_pb2.AnalyzeMealRequest(image=image, request_id=f"honest-{n}")
        response = await self._call("AnalyzeMeal", self.stub.AnalyzeMeal, request, metadata)
        if response is not None:
            mine.append(response.sample_id)
            self.told.add(response.sample_id)
            self.photos.append(image)

    async def _get(self, metadata, mine: list[str]) -> None:
        if mine:
            request = gateway_pb2.GetSampleRequest(sample_id=random.choice(mine))
            await self._call("GetSample", self.stub.GetSample, request, metadata)

    async def _call(self, rpc: str, method, request, metadata):
        sent = time.monotonic()
        code, response = "OK", None
        try:
            response = await method(request, metadata=metadata, timeout=TIMEOUTS_S[rpc])
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        self.calls.append(Call(sent, rpc, time.monotonic() - sent, code))
        return response
