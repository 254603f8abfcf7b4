"""A person's correction and an admin's review of it (CorrectSample, ReviewCorrection).

The servicer's side only: checks, roles and status codes; what a correction is and when it is
flagged is gateway/corrections.py, what training makes of it trainer/trust.py.
"""

from __future__ import annotations

import logging

import grpc

from foodcal.rpc.errors import abort
from foodcal.store import CorrectionReview, LabelStatus, Sample
from foodcal.store.tables import utcnow
from foodcal.v1 import gateway_pb2
from gateway.corrections import InvalidCorrection, correction_of, flag_of
from gateway.errors import on_thread
from gateway.samples import sample_proto

log = logging.getLogger(__name__)


class CorrectionRPCs:
    """Mixed into GatewayServicer: uses its `db`, `_caller`, `_check_id` and `_sample`."""

    async def CorrectSample(self, request, context):
        await self._check_id(context, request.sample_id)
        try:  # counts and sizes first, then the values: all before the sample is looked up
            correction = correction_of(request)
        except InvalidCorrection as error:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error), error.reason, **error.metadata)
        caller = self._caller(context)
        await self._sample(context, request.sample_id, caller)

        def correct() -> Sample:
            with self.db.session() as session:
                sample = session.get(Sample, request.sample_id)
                sample.set_values("correction", correction.values)
                items = correction.items
                sample.correction_items = [item.to_json() for item in items] if items else None
                sample.corrected_at, sample.corrected_by = utcnow(), caller.identity
                label = sample.values("label") if sample.label_status == LabelStatus.LABELED else None
                sample.correction_flag = flag_of(correction.values, label, sample.values("pred"))
                sample.correction_review = CorrectionReview.UNREVIEWED  # a new correction, a new review
                session.add(sample)
                return sample

        sample = await on_thread(context, correct)
        if sample.correction_flag:
            log.warning("sample %s corrected, flagged: %s", sample.id, sample.correction_flag)
        else:
            log.info("sample %s corrected", sample.id)
        return gateway_pb2.CorrectSampleResponse(sample=sample_proto(sample))

    async def ReviewCorrection(self, request, context):
        """Admins: confirm or reject a correction (or undo a review)."""
        try:
            review = CorrectionReview.from_proto(request.review)
        except ValueError:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "review must be CONFIRMED, REJECTED or UNREVIEWED",
                "INVALID_REVIEW",
            )
        sample = await self._sample(context, request.sample_id, self._caller(context))
        if sample.corrected_at is None:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"sample {sample.id} has no correction to review",
                "NOT_CORRECTED",
            )

        def store() -> Sample:
            with self.db.session() as session:
                row = session.get(Sample, request.sample_id)
                row.correction_review = review
                session.add(row)
                return row

        sample = await on_thread(context, store)
        log.info("correction of sample %s reviewed: %s", sample.id, review.name.lower())
        return gateway_pb2.ReviewCorrectionResponse(sample=sample_proto(sample))
