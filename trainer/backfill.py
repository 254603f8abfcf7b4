"""Re-embed stored images through TorchServe after the classifier changed (`make backfill`)."""

from __future__ import annotations

import asyncio
import logging

from sqlmodel import select

from foodcal.store import Database, Sample
from foodcal.store.images import PHOTO_REMOVED
from model_store.torchserve_client import Classification, TorchServeClient

log = logging.getLogger(__name__)


async def current_classifier(torchserve: TorchServeClient) -> str:
    """Ask the served classifier who it is, with a real (tiny) prediction."""
    return (await torchserve.identify_classifier())[0]


async def backfill(db: Database, torchserve: TorchServeClient, images, batch_size: int) -> tuple[int, str]:
    """Returns (samples updated, classifier version). Each batch runs concurrently against TorchServe."""
    classifier = await current_classifier(torchserve)

    def stale() -> list[tuple[str, str]]:
        with db.session() as session:
            query = select(Sample.id, Sample.image_sha256).where(
                Sample.classifier_version != classifier,
                Sample.image_path != PHOTO_REMOVED,  # no photo to read: it keeps the features it has
            )
            return list(session.exec(query).all())

    pending = await asyncio.to_thread(stale)
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        results = await asyncio.gather(*(_embed(torchserve, images, sha256) for _, sha256 in batch))
        await asyncio.to_thread(_save, db, [sample_id for sample_id, _ in batch], results)
        log.info("backfill: %d/%d samples re-embedded with %s", start + len(batch), len(pending), classifier)
    return len(pending), classifier


async def _embed(torchserve: TorchServeClient, images, sha256: str) -> Classification:
    # The stored photo as AnalyzeMeal sends it (TorchServe decodes it): embeddings stay comparable.
    return await torchserve.classify(await asyncio.to_thread(images.get, sha256))


def _save(db: Database, sample_ids: list[str], results: list[Classification]) -> None:
    with db.session() as session:
        for sample_id, classification in zip(sample_ids, results, strict=True):
            sample = session.get(Sample, sample_id)
            sample.classifier_version = classification.classifier
            sample.dishes = [[label, p] for label, p in classification.dishes]
            sample.top1_dish = classification.dishes[0][0][:100] if classification.dishes else ""
            sample.embedding = classification.embedding.astype("<f4").tobytes()
            sample.class_probabilities = classification.probabilities.astype("<f4").tobytes()
            session.add(sample)


def main() -> None:
    """`make backfill`: asks the running trainer, so runs and backfills never overlap."""
    from foodcal.rpc.internal_tls import internal_sync_channel
    from foodcal.settings import load_settings
    from foodcal.v1 import trainer_pb2, trainer_pb2_grpc

    settings = load_settings()
    # INTERNAL_TLS_*, as the gateway dials the trainer: a trainer serving TLS refuses plaintext.
    with internal_sync_channel(settings, settings.trainer_address) as channel:
        response = trainer_pb2_grpc.TrainerServiceStub(channel).BackfillEmbeddings(
            trainer_pb2.BackfillEmbeddingsRequest(),
            metadata=(("authorization", f"Bearer {settings.internal_token}"),),
            timeout=3600,
        )
    print(f"re-embedded {response.updated_samples} samples with classifier {response.classifier}")


if __name__ == "__main__":
    main()
