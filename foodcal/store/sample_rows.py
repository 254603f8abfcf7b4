"""A new sample's rows, written in one go on a Core connection: AnalyzeMeal's hot path, where an
ORM session's unit of work costs more CPU than the writes themselves."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from foodcal.store.tables import LabelJob, PairedPrediction, Sample, SampleCorrection, SampleFeatures

_INSERTS = {
    part: insert(part.__table__) for part in (LabelJob, SampleFeatures, SampleCorrection, PairedPrediction)
}
_INSERT_SAMPLE = insert(Sample.__table__)


def insert_sample(connection: Connection, sample: Sample) -> None:
    """The sample, then each of its parts it has (a label job and features always)."""
    connection.execute(_INSERT_SAMPLE, sample.model_dump())
    for part in (sample.label_job, sample.features, sample.correction, sample.paired):
        if part is not None:
            part.sample_id = sample.id
            connection.execute(_INSERTS[type(part)], part.model_dump())
