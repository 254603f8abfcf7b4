"""The labeler's logic: cache by photo, model and prompt; ask ChatGPT; or answer offline from
the reference table."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from dataclasses import dataclass, field

from foodcal.domain.convert import public_provider
from foodcal.domain.labels import Label, LabelSource
from foodcal.domain.notes import note_sha256
from foodcal.rpc import metrics
from foodcal.settings import Settings, openai_call_bound_s
from foodcal.store import ChatGPTCall, Database, LabelCache
from labeler import in_flight
from labeler.answer import PROMPT_VERSION
from labeler.chatgpt import ChatGPT, LabelFailure, Usage
from model_store.reference import lookup

log = logging.getLogger(__name__)

NOTE_NOT_USED = "note_not_used"  # the reference table cannot read the person's note
WAIT_POLL_S = 0.5  # how often a call waits for another replica's answer to the same photo
CLAIM_MARGIN_S = 30.0  # beyond OpenAI's longest wait: reading the photo, storing the answer


@dataclass(frozen=True)
class LabelAnswer:
    """A label and what getting it cost: nothing when it came from the cache."""

    label: Label
    usage: Usage = field(default_factory=Usage)
    cached: bool = False


def request_key(note: str, more: tuple[str, ...] = ()) -> str:
    """The cache key's last part: the note's hash, or with other angles the hash of both (the same
    plate from more angles is another question, so it is asked again)."""
    if not more:
        return note_sha256(note)
    return hashlib.sha256("\n".join((note, *more)).encode()).hexdigest()


class Labeler:
    def __init__(self, settings: Settings, db: Database, chatgpt: ChatGPT | None, images) -> None:
        """`images`: the image store (foodcal.store.open_image_store), read for a photo sent by hash."""
        self.settings, self.db, self.chatgpt, self.images = settings, db, chatgpt, images
        self.provider = public_provider(settings.openai_base_url)  # a name, never the endpoint
        # One in-flight call per photo, so two identical photos at once are paid for once: a lock
        # here for this process, a claim in the database across replicas (labeler/in_flight.py).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        bound = openai_call_bound_s(settings.openai_timeout_s, settings.openai_max_retries)
        self.claim_ttl_s = bound + CLAIM_MARGIN_S
        self._paid: set[asyncio.Task] = set()  # calls that outlive their caller, until recorded

    async def label(
        self,
        sha256: str,
        hints: list[tuple[str, float]],
        note: str = "",
        image: bytes | None = None,
        more: tuple[str, ...] = (),
    ) -> LabelAnswer:
        """`sha256`: the original photo's (the cache key). `image`: its bytes when the caller sent
        them; else read from the image store, and only when no cached label answers.
        `note`: the person's note, already cleaned (foodcal.domain.notes); part of the cache key.
        `more`: the sha256s of other angles of the same plate (in the image store), asked about in
        the same call; part of the cache key too."""
        if self.chatgpt is None:
            return self._from_reference(hints, note)
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        # PROMPT_VERSION read here, so a test can bump it
        key = (sha256, self.chatgpt.model, PROMPT_VERSION, request_key(note, more))
        async with lock:
            owner = in_flight.new_owner()
            while not await asyncio.to_thread(in_flight.claim, self.db, key, owner, self.claim_ttl_s):
                if (cached := await self._from_cache(key)) is not None:
                    return cached
                await asyncio.sleep(WAIT_POLL_S)  # another replica is asking; its answer is cached
            if (cached := await self._from_cache(key)) is not None:  # answered before our claim
                await asyncio.to_thread(in_flight.release, self.db, key, owner)
                return cached
            # Once asked, the call is paid: it runs to its record whatever happens to our caller
            # (a deadline, a cancel, a shutdown: see drain), so that a retry finds it in the cache.
            call = asyncio.create_task(self._ask_and_record(key, owner, image, hints, note, more))
            self._paid.add(call)
            call.add_done_callback(self._done)
            return await asyncio.shield(call)

    def _done(self, call: asyncio.Task) -> None:
        self._paid.discard(call)
        if not call.cancelled():
            call.exception()  # retrieved: a failure its caller left is logged, not warned about

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: let the calls already paid for finish and be recorded."""
        if self._paid:
            log.info("waiting for %d label calls in flight to be recorded", len(self._paid))
            await asyncio.wait(self._paid, timeout=timeout_s)

    async def _from_cache(self, key: in_flight.Key) -> LabelAnswer | None:
        cached = await asyncio.to_thread(self._cached, key)
        if cached is not None:
            metrics.label_cache_hit(key[1])
            log.info("label %s… answered from cache (%s)", key[0][:12], key[1])
        return cached

    async def _ask_and_record(
        self, key: in_flight.Key, owner: str, image, hints, note: str, more: tuple[str, ...]
    ) -> LabelAnswer:
        sha256 = key[0]
        try:
            try:
                if image is None:
                    image = await asyncio.to_thread(self._stored, sha256)
                angles = [await asyncio.to_thread(self._stored, other) for other in more]
                reply = await self.chatgpt.ask(image, hints, note, angles)
            except LabelFailure as failure:
                if failure.usage is not None:
                    await asyncio.to_thread(
                        self._record_call, sha256, self.chatgpt.model, failure.reason, failure.usage
                    )
                log.warning("label %s… failed: %s", sha256[:12], failure)
                raise
            result = LabelAnswer(self._label(reply), reply.usage)
            await asyncio.to_thread(self._store, key, result)
            outcome = "rejected" if result.label.rejected else "labeled"
            log.info("label %s… %s: %s, %d tokens, $%.5f", sha256[:12], outcome, result.label.dish,
                     reply.usage.total_tokens, reply.usage.cost_usd)  # fmt: skip
            return result
        finally:
            await asyncio.to_thread(in_flight.release, self.db, key, owner)

    def _stored(self, sha256: str) -> bytes:
        try:
            return self.images.get(sha256)
        except FileNotFoundError:
            raise LabelFailure("image_missing", f"the image store has no photo {sha256[:12]}…") from None
        except OSError as error:  # S3 down or slow: worth another try
            raise LabelFailure("unavailable", f"could not read the photo: {error}") from None

    def _label(self, reply) -> Label:
        answer = reply.answer
        common = {"source": LabelSource.CHATGPT, "model": reply.model, "provider": self.provider}
        if answer is None:
            return Label(dish="", portion_g=0, nutrients=None, confidence=0,
                         rejection_reason=f"refused: {reply.refusal}", **common)  # fmt: skip
        if not answer.is_food:
            return Label(dish=answer.dish, portion_g=0, nutrients=None, confidence=answer.confidence,
                         rejection_reason="not_food: the photo shows no food", **common)  # fmt: skip
        return Label(
            dish=answer.dish,
            portion_g=answer.portion_g,
            nutrients=answer.nutrients,
            confidence=answer.confidence,
            flags=tuple(answer.flags),
            items=tuple(answer.items),
            **common,
        )

    def _from_reference(self, hints: list[tuple[str, float]], note: str = "") -> LabelAnswer:
        if not hints:
            raise ValueError("offline labels come from the classifier's top dish: send dish_hints")
        dish = lookup(hints[0][0])
        label = Label(
            source=LabelSource.REFERENCE,
            dish=dish.label,
            portion_g=dish.serving_g,
            nutrients=dish.nutrients,
            confidence=hints[0][1],
            model="reference-table",
            provider="foodcal",
            flags=(NOTE_NOT_USED,) if note else (),
        )
        return LabelAnswer(label)

    def _cached(self, key: tuple[str, str, int, str]) -> LabelAnswer | None:
        with self.db.session() as session:
            row = session.get(LabelCache, key)
            if row is None:
                return None
            row.hits += 1
            session.add(row)
            return LabelAnswer(Label.from_json(row.label), cached=True)

    def _store(self, key: tuple[str, str, int, str], result: LabelAnswer) -> None:
        sha256, model, prompt_version, note_key = key
        outcome = "rejected" if result.label.rejected else "labeled"
        with self.db.session() as session:
            session.merge(
                LabelCache(
                    image_sha256=sha256,
                    model=model,
                    prompt_version=prompt_version,
                    note_sha256=note_key,
                    outcome=outcome,
                    label=result.label.to_json(),
                )
            )
            session.add(self._call_row(sha256, result.label.model, outcome, result.usage))

    def _record_call(self, sha256: str, model: str, outcome: str, usage: Usage) -> None:
        with self.db.session() as session:
            session.add(self._call_row(sha256, model, outcome, usage))

    @staticmethod
    def _call_row(sha256: str, model: str, outcome: str, usage: Usage) -> ChatGPTCall:
        return ChatGPTCall(
            image_sha256=sha256,
            model=model,
            outcome=outcome,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd,
        )
