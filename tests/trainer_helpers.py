"""What the training tests share: labelled samples written straight into the store, label functions
(learnable, pure noise, above the table, constant), and starting and watching a run."""

import uuid

import grpc
import numpy as np
import pytest

from foodcal.store import LabelJob, LabelStatus, Sample, SampleFeatures
from foodcal.store.tables import set_nutrients
from foodcal.v1 import gateway_pb2
from model_store.reference import food101_labels, lookup
from tests.conftest import auth

TABLE = np.array([lookup(label).nutrients for label in food101_labels()], dtype=np.float32)


def learnable(embedding, probabilities):
    """Labels that are a clear function of the features (what a good head can learn)."""
    return (
        max(50.0, 400 + 150 * embedding[0]),
        max(1.0, 20 + 8 * embedding[1]),
        max(1.0, 15 + 6 * embedding[2]),
        max(1.0, 50 + 20 * embedding[3]),
    )


def noise(rng):
    """Labels that are the reference table's answer times pure noise: nothing to learn beyond v0."""

    def target(embedding, probabilities):
        return tuple(float(v) for v in (probabilities @ TABLE) * np.exp(rng.normal(0, 0.4, 4)))

    return target


def add_samples(db, count, classifier, target, status=LabelStatus.LABELED, seed=0):
    rng, id_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    with db.session() as session:
        for index in range(count):
            embedding = rng.normal(size=48).astype("<f4")
            logits = rng.normal(size=101) * 2
            probabilities = (np.exp(logits) / np.exp(logits).sum()).astype("<f4")
            sample = Sample(
                id=uuid.UUID(bytes=id_rng.bytes(16)).hex,  # a fixed split: the same run every time
                image_sha256=f"{seed:08x}{index:056x}",
                image_path="unused",
                features=SampleFeatures(
                    classifier_version=classifier,
                    embedding=embedding.tobytes(),
                    class_probabilities=probabilities.tobytes(),
                ),
                label_job=LabelJob(status=status),
            )
            sample.set_prediction(tuple(float(v) for v in probabilities @ TABLE))
            if status == LabelStatus.LABELED:
                set_nutrients(sample.label_job, "label", target(embedding, probabilities))
            session.add(sample)


async def start_run(app, **params):
    return await app.gateway.StartTrainingRun(
        gateway_pb2.GatewayServiceStartTrainingRunRequest(**params), metadata=auth()
    )


async def watch(app, run_id):
    events = []
    async for response in app.gateway.WatchTrainingRun(
        gateway_pb2.GatewayServiceWatchTrainingRunRequest(run_id=run_id), metadata=auth()
    ):
        events.append(response.event)
    return events


async def refused(app, **params):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await start_run(app, **params)
    return raised.value


def above_the_table(factor):
    """ChatGPT sees bigger plates than the table for every dish: a systematic offset."""
    return lambda embedding, probabilities: tuple(float(v) for v in (probabilities @ TABLE) * factor)


def constant(values):
    return lambda embedding, probabilities: values
