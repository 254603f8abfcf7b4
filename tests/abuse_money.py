"""The attacks of issue 30 on money, training data and privacy (items 7, 10, 11, 12), for
tests/abuse.py; see tests/abuse_stall.py for the Outcome they return."""

from __future__ import annotations

import asyncio
import hashlib
import re

from sqlmodel import col, select

from foodcal.settings import Settings
from foodcal.store import ChatGPTCall, LabelJob, Sample, SampleFeatures
from foodcal.store.tables import LabelStatus
from foodcal.v1 import gateway_pb2
from gateway.auth import identity_of
from tests.abuse_load import HonestLoad
from tests.abuse_stall import Outcome, attack_photo, attacker, counted, flood
from tests.abuse_system import Target

LEAKS = ("10.20.30.40", "Traceback", "sk-live")  # what the stub's error text carries


async def cancelled_labels(target: Target, seconds: float, photos: int = 6) -> Outcome:
    slow_s, deadline_s = 2.5, 1.0
    out = Outcome(
        "7 labels cancelled by deadlines",
        f"{photos} AnalyzeMeal with a {deadline_s:.0f} s deadline while ChatGPT takes {slow_s} s",
    )
    target.rules(**{"abuse-cancel-slow": {"delay_s": slow_s}})
    images = [attack_photo(50_000 + i) for i in range(photos)]
    async with attacker(target, "abuse-cancel") as (stub, metadata, _):

        async def send(i: int, image: bytes):
            await asyncio.sleep(0.3 * i)
            request = gateway_pb2.AnalyzeMealRequest(
                image=image, note="abuse-cancel-slow", request_id=f"c-{i}"
            )
            return await counted(out.codes, stub.AnalyzeMeal(request, metadata=metadata, timeout=deadline_s))

        answers = await asyncio.gather(*(send(i, image) for i, image in enumerate(images)))
    out.told = {answer.sample_id for answer in answers if answer is not None}
    hashes = [hashlib.sha256(image).hexdigest() for image in images]

    async def after() -> None:  # the queue has labelled what the deadlines left pending
        target.rules()
        owner = Sample.owner == identity_of("abuse-cancel")
        stored = target.count(owner)
        labeled = target.count(owner, LabelJob.status == LabelStatus.LABELED)
        recorded = target.recorded_calls(col(ChatGPTCall.image_sha256).in_(hashes))
        with target.db.session() as session:  # kept for the client's retry with the same request_id
            out.told |= set(session.exec(select(Sample.id).where(owner)).all())
        out.facts.append(
            f"{stored} stored (kept for the retry), {labeled} labelled; {recorded} calls recorded"
        )
        out.checks["every photo stored and labelled"] = stored == labeled == photos

    out.after = after
    return out


async def training_flood(target: Target, seconds: float) -> Outcome:
    out = Outcome("10 one client floods training", "AnalyzeMeal back to back, every other one the same photo")
    async with attacker(target, "abuse-train") as (stub, metadata, _):

        def send(i: int):
            image = attack_photo(10_000 + (i if i % 2 else 0))
            return stub.AnalyzeMeal(
                gateway_pb2.AnalyzeMealRequest(image=image), metadata=metadata, timeout=30
            )

        answers: list = []

        async def kept(i: int):
            answers.append(await send(i))

        await flood(out.codes, kept, seconds, workers=2)
    out.told = {answer.sample_id for answer in answers}

    async def after() -> None:
        from trainer.data import load_dataset

        cap = Settings.model_fields["training_max_share_per_client"].default
        owner = identity_of("abuse-train")
        labeled = LabelJob.status == LabelStatus.LABELED
        stored_share = target.count(labeled, Sample.owner == owner) / max(target.count(labeled), 1)
        with target.db.session() as session:
            version = session.exec(
                select(SampleFeatures.classifier_version).join(Sample).where(Sample.owner == owner)
            ).first()
            owners = dict(session.exec(select(Sample.id, Sample.owner)).all())
        shares = []
        for limit in (1.0, cap):
            data = await asyncio.to_thread(load_dataset, target.db, version, limit)
            shares.append(sum(owners[i] == owner for i in data.ids) / max(len(data), 1))
        out.facts.append(
            f"share of labelled samples: stored {stored_share:.0%}, one row per photo {shares[0]:.0%}, "
            f"taken by the trainer {shares[1]:.0%} (TRAINING_MAX_SHARE_PER_CLIENT={cap})"
        )
        out.checks["the trainer takes at most the cap"] = shares[1] <= cap + 1e-9

    out.after = after
    return out


async def duplicate_probe(target: Target, honest: HonestLoad, probes: int = 5) -> Outcome:
    out = Outcome(
        "11 duplicate_image probe", f"another client sends {probes} honest clients' photos, then one again"
    )
    images = honest.photos[-probes:]
    async with attacker(target, "abuse-probe") as (stub, metadata, _):
        flags = []
        for image in [*images, images[0]]:
            answer = await counted(
                out.codes, stub.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=image), metadata=metadata)
            )
            if answer is not None:
                out.told.add(answer.sample_id)
                flags.append(answer.duplicate_image)
    out.facts.append(f"duplicate_image answered: {flags}")
    out.checks["another client's photo never flagged"] = len(flags) == probes + 1 and not any(flags[:probes])
    out.checks["its own repeat flagged"] = bool(flags) and flags[-1]
    return out


async def label_error_leak(target: Target, seconds: float) -> Outcome:
    message = "upstream 10.20.30.40:5432 refused; Traceback (most recent call last): key sk-live-123"
    out = Outcome(
        "12 label_error leak", "ChatGPT fails (a 400, a 500) with a host, a traceback and a key in its text"
    )
    target.rules(
        **{
            "abuse-leak-400": {"status": 400, "message": message},
            "abuse-leak-500": {"status": 500, "message": message},
        }
    )
    texts, errors = [], []
    async with attacker(target, "abuse-leak") as (stub, metadata, _):
        for i, note in enumerate(("abuse-leak-400", "abuse-leak-500")):
            request = gateway_pb2.AnalyzeMealRequest(image=attack_photo(60_000 + i), note=note)
            answer = await counted(out.codes, stub.AnalyzeMeal(request, metadata=metadata, timeout=30))
            if answer is None:
                continue
            out.told.add(answer.sample_id)
            reply = await stub.GetSample(
                gateway_pb2.GetSampleRequest(sample_id=answer.sample_id), metadata=metadata
            )
            errors.append(reply.sample.label_error)
            texts += [str(answer), str(reply)]
    target.rules()  # the 500's retry in the label queue now succeeds
    out.facts.append(f"label_error read by the client: {errors}")
    out.checks["label_error is a bare reason code"] = len(errors) == 2 and all(
        re.fullmatch(r"[a-z_]+", error) for error in errors
    )
    out.checks["no host, traceback or key in any answer"] = not any(
        leak in text for leak in LEAKS for text in texts
    )
    return out
