"""A deleted sample is in no later training run or quality report; a photo that RETENTION_DAYS
removed never stops a backfill (its sample keeps its features)."""

from sqlmodel import select

from foodcal.store import ImageStore, Sample, SampleFeatures
from foodcal.store.images import PHOTO_REMOVED
from foodcal.v1 import gateway_pb2
from tests.conftest import auth, photo
from tests.trainer_helpers import add_samples, learnable, start_run, watch
from trainer.backfill import backfill, current_classifier
from trainer.data import in_test_set, is_early_stopping, is_validation, load_dataset

ADMIN = auth()


async def test_a_deleted_sample_is_in_no_later_training_run_or_quality_report(system, torchserve):
    app = await system(services=("trainer", "gateway"), use_chatgpt=False)
    classifier = await current_classifier(torchserve.client)
    add_samples(app.db, 80, classifier, learnable)
    with app.db.session() as session:
        rows = session.exec(select(Sample.id, Sample.image_sha256)).all()
    trained = next(i for i, h in rows if not (in_test_set(h) or is_validation(h) or is_early_stopping(h)))
    tested = next(i for i, h in rows if in_test_set(h))
    train, early, _, _ = load_dataset(app.db, classifier).split()
    report_request = gateway_pb2.GatewayServiceGetQualityReportRequest()
    before = await app.gateway.GetQualityReport(report_request, metadata=ADMIN)
    tested_before = before.versions[0].test_chatgpt.overall.samples
    assert tested_before > 0

    for sample_id in (trained, tested):
        await app.gateway.DeleteSample(gateway_pb2.DeleteSampleRequest(sample_id=sample_id), metadata=ADMIN)

    after = await app.gateway.GetQualityReport(report_request, metadata=ADMIN)
    assert after.versions[0].test_chatgpt.overall.samples == tested_before - 1
    run = await start_run(app, epochs=2)
    outcome = [e.outcome for e in await watch(app, run.run_id) if e.HasField("outcome")][-1]
    assert outcome.train_samples == len(train) + len(early) - 1, outcome.message


async def test_backfill_skips_photos_that_retention_removed_and_keeps_their_features(
    sqlite_db, torchserve, tmp_path
):
    store = ImageStore(tmp_path / "uploads")
    kept = store.put(photo())
    with sqlite_db.session() as session:
        session.add(
            Sample(
                id="k" * 32,
                image_sha256=kept.sha256,
                image_path=kept.path,
                features=SampleFeatures(classifier_version="old"),
            )
        )
        session.add(
            Sample(
                id="r" * 32, image_sha256="0" * 64, image_path=PHOTO_REMOVED,
                features=SampleFeatures(
                    classifier_version="old", embedding=b"features", class_probabilities=b"probabilities"
                ),
            )
        )  # fmt: skip
    updated, classifier = await backfill(sqlite_db, torchserve.client, store, batch_size=8)
    assert updated == 1
    with sqlite_db.session() as session:
        assert session.get(Sample, "k" * 32).features.classifier_version == classifier
        removed = session.get(Sample, "r" * 32).features
    assert (removed.classifier_version, removed.embedding) == ("old", b"features")
