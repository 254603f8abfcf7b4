"""DeleteSample and RETENTION_DAYS through the real gateway, on SQLite and PostgreSQL: what goes
(the sample, its photo and cached labels when nothing else has them, its request ids), and that
nothing else does (other samples, labels, versions)."""

import asyncio
from datetime import timedelta
from pathlib import Path

import grpc
from sqlmodel import select

from foodcal.rpc.errors import details_of, error_info
from foodcal.store import AnalyzeRequest, ChatGPTCall, LabelCache, ModelVersionRow, Sample
from foodcal.store.images import PHOTO_REMOVED
from foodcal.store.tables import utcnow
from foodcal.v1 import gateway_pb2
from tests.conftest import ADMIN_TOKEN, API_TOKEN, OTHER_CLIENT_TOKEN, auth, photo
from tests.test_access import failure

CLIENT, OTHER, ADMIN = auth(API_TOKEN), auth(OTHER_CLIENT_TOKEN), auth(ADMIN_TOKEN)


def snapshot(db, table, key):
    """Every row of `table` as plain values, by key: what 'unchanged' is compared on."""
    with db.session() as session:
        return {key(row): row.model_dump() for row in session.exec(select(table)).all()}


def sample_key(row):
    return row.id


def cache_key(row):
    return (row.image_sha256, row.model, row.prompt_version, row.note_sha256)


async def analyze(app, shade, metadata=CLIENT, request_id=""):
    request = gateway_pb2.AnalyzeMealRequest(
        image=photo((shade * 60, 10, 200 - shade * 40)), request_id=request_id
    )
    return await app.gateway.AnalyzeMeal(request, metadata=metadata, timeout=60)


def photo_file(app, sha256: str) -> Path:
    return Path(app.settings.upload_dir) / "images" / sha256[:2] / sha256[2:4] / sha256


async def delete(app, sample_id, metadata=CLIENT):
    return await app.gateway.DeleteSample(
        gateway_pb2.DeleteSampleRequest(sample_id=sample_id), metadata=metadata
    )


async def test_delete_removes_the_sample_its_photo_and_cached_labels_and_nothing_else(system, database_url):
    app = await system(services=("labeler", "gateway"), db_url=database_url)
    twice = [await analyze(app, 1), await analyze(app, 1)]  # one photo, two samples
    alone = await analyze(app, 2, request_id="retry-me")
    theirs = await analyze(app, 3, metadata=OTHER)
    with app.db.session() as session:
        sha = {s.id: s.image_sha256 for s in session.exec(select(Sample)).all()}
        session.add(ModelVersionRow(version=7, description="a version that must stay"))
    assert all(photo_file(app, h).exists() for h in sha.values())
    samples, caches = snapshot(app.db, Sample, sample_key), snapshot(app.db, LabelCache, cache_key)
    versions, calls = (
        snapshot(app.db, ModelVersionRow, lambda r: r.version),
        snapshot(app.db, ChatGPTCall, lambda r: r.id),
    )
    assert {k[0] for k in caches} == set(sha.values())  # each photo labelled once, cached

    gone = await delete(app, alone.sample_id)
    assert gone.sample_id == alone.sample_id and gone.photo_deleted and gone.label_cache_entries_deleted == 1
    assert not photo_file(app, sha[alone.sample_id]).exists()
    with app.db.session() as session:
        assert session.get(Sample, alone.sample_id) is None
        assert (
            session.exec(select(AnalyzeRequest).where(AnalyzeRequest.sample_id == alone.sample_id)).all()
            == []
        )

    # the same photo in another sample: the photo and its cached label stay for that one
    kept = await delete(app, twice[0].sample_id)
    assert not kept.photo_deleted and kept.label_cache_entries_deleted == 0
    assert photo_file(app, sha[twice[1].sample_id]).exists()
    assert (
        await app.gateway.GetSample(
            gateway_pb2.GetSampleRequest(sample_id=twice[1].sample_id), metadata=CLIENT
        )
    ).sample.chatgpt_label.dish

    # another client's sample is NOT_FOUND like a missing one; a second delete is NOT_FOUND too
    missing = await failure(lambda: delete(app, "f" * 32))
    other = await failure(lambda: delete(app, theirs.sample_id))
    again = await failure(lambda: delete(app, alone.sample_id))
    for error in (missing, other, again):
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(details_of(error)).reason == "SAMPLE_NOT_FOUND"
    assert other.details().replace(theirs.sample_id, "f" * 32) == missing.details()
    empty = await failure(lambda: delete(app, ""))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT

    # everything not deleted is exactly as it was
    deleted = {alone.sample_id, twice[0].sample_id}
    assert snapshot(app.db, Sample, sample_key) == {k: v for k, v in samples.items() if k not in deleted}
    assert snapshot(app.db, LabelCache, cache_key) == {
        k: v for k, v in caches.items() if k[0] != sha[alone.sample_id]
    }
    assert snapshot(app.db, ModelVersionRow, lambda r: r.version) == versions
    assert snapshot(app.db, ChatGPTCall, lambda r: r.id) == calls  # what was paid stays on record
    assert photo_file(app, sha[theirs.sample_id]).exists()

    # an admin deletes any sample; the last sample of a photo takes the photo with it
    assert (await delete(app, theirs.sample_id, ADMIN)).photo_deleted
    assert (await delete(app, twice[1].sample_id)).photo_deleted
    assert app.upload_files == [] and snapshot(app.db, LabelCache, cache_key) == {}


async def test_retention_deletes_old_photos_and_keeps_every_number(system, database_url):
    # a pass every 0.2 s: photos made old below go on the next one
    app = await system(
        services=("gateway",),
        db_url=database_url,
        use_chatgpt=False,
        retention_days=30,
        retention_interval_s=0.2,
    )
    old, recent = await analyze(app, 1), await analyze(app, 2)
    old_again = await analyze(app, 3)  # an old photo sent again recently: it stays for the new sample
    resent = await analyze(app, 3)
    with app.db.session() as session:
        for sample_id in (old.sample_id, old_again.sample_id):
            sample = session.get(Sample, sample_id)
            sample.created_at = utcnow() - timedelta(days=31)
            session.add(sample)
    before = snapshot(app.db, Sample, sample_key)
    for _ in range(100):
        after = snapshot(app.db, Sample, sample_key)
        if after[old.sample_id]["image_path"] == PHOTO_REMOVED:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # another pass or two: nothing more goes
    after = snapshot(app.db, Sample, sample_key)
    assert after[old.sample_id]["image_path"] == PHOTO_REMOVED
    assert not photo_file(app, before[old.sample_id]["image_sha256"]).exists()
    # only the path changed: numbers, features and labels are kept
    assert {k: v for k, v in after[old.sample_id].items() if k != "image_path"} == {
        k: v for k, v in before[old.sample_id].items() if k != "image_path"
    }
    for kept in (recent.sample_id, old_again.sample_id, resent.sample_id):
        assert after[kept] == before[kept]
        assert photo_file(app, before[kept]["image_sha256"]).exists()

    record = [r async for r in app.gateway.ExportSamples(gateway_pb2.ExportSamplesRequest(), metadata=CLIENT)]
    removed = next(r for r in record if r.sample_id == old.sample_id)
    assert removed.photo_removed and removed.nutrition == old.nutrition
    got = await app.gateway.GetSample(gateway_pb2.GetSampleRequest(sample_id=old.sample_id), metadata=CLIENT)
    assert got.sample.photo_removed and got.sample.own_prediction == old.own_prediction
    deleted = await delete(app, old.sample_id)  # deleting it later: nothing left to delete
    assert not deleted.photo_deleted
