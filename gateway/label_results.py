"""Applying a labeler answer (or failure) to a stored sample, and the retry schedule."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from datetime import timedelta

import grpc

from foodcal.domain.labels import Label, LabelSource, LabelStatus
from foodcal.store import Sample
from foodcal.store.tables import utcnow
from foodcal.v1 import labeler_pb2

log = logging.getLogger(__name__)

# An outage (labeler or OpenAI down, slow, rate limited) never ends a label: it stays pending,
# retried at the capped backoff, until the outage is over.
TRANSIENT_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}
# Retried up to LABEL_MAX_ATTEMPTS, then FAILED with the reason. Anything else is final at once
# (e.g. an invalid answer: paying again for the same photo would most likely buy the same answer).
RETRYABLE_CODES = {
    grpc.StatusCode.FAILED_PRECONDITION,  # auth failed: retried until someone fixes the key
    grpc.StatusCode.UNAUTHENTICATED,  # the labeler refused our INTERNAL_TOKEN: a setting to fix
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNKNOWN,
}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_s: float
    max_s: float

    def delay_s(self, attempts: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0.5, 1.0) * min(self.max_s, self.base_s * 2 ** max(attempts - 1, 0))


def apply_label(sample: Sample, response: labeler_pb2.LabelMealResponse) -> None:
    label = Label.from_proto(response.label, response.rejection_reason if response.rejected else "")
    sample.label_cached = response.cached
    sample.labeled_at = utcnow()
    sample.label_error = label.rejection_reason
    sample.label_claimed_by = sample.label_claimed_until = sample.label_next_attempt_at = None
    if label.rejected:
        sample.label_status = LabelStatus.REJECTED
        label = replace(label, nutrients=None)
    elif label.source == LabelSource.REFERENCE:
        # No ChatGPT configured: never training data, so its numbers are not kept.
        sample.label_status = LabelStatus.REFERENCE_ONLY
        label = replace(label, nutrients=None)
    else:
        sample.label_status = LabelStatus.LABELED
    sample.set_label(label)


# What a client reads as `label_error`: the labeler's documented reasons (labeler/service.py), its
# rejections, and a failed call's gRPC code. The text after the reason can name hosts or carry an
# exception's words: it stays in the database and the logs.
LABELER_REASONS = frozenset(
    {"rate_limited", "timeout", "unavailable", "invalid_answer", "invalid_request", "auth_failed",
     "image_missing", "refused", "not_food"}
)  # fmt: skip
REASON_CODES = LABELER_REASONS | {code.name.lower() for code in grpc.StatusCode}


def reason_code(label_error: str) -> str:
    """The reason a stored `label_error` starts with; "label_failed" for text stored without one."""
    if not label_error:
        return ""
    head = label_error.split(":", 1)[0]
    return head if head in REASON_CODES else "label_failed"


def apply_failure(sample: Sample, code: grpc.StatusCode, message: str, policy: RetryPolicy) -> None:
    sample.label_attempts += 1
    if message.split(":", 1)[0] not in LABELER_REASONS:  # gRPC's own text: its code is the reason
        message = f"{code.name.lower()}: {message}"
    sample.label_error = message[:500]
    log.warning("sample %s: label attempt %d failed: %s", sample.id, sample.label_attempts, message[:500])
    sample.label_claimed_by = sample.label_claimed_until = None
    retry = code in TRANSIENT_CODES or (
        code in RETRYABLE_CODES and sample.label_attempts < policy.max_attempts
    )
    if retry:
        sample.label_status = LabelStatus.PENDING
        sample.label_next_attempt_at = utcnow() + timedelta(seconds=policy.delay_s(sample.label_attempts))
    else:
        sample.label_status = LabelStatus.FAILED
        sample.label_next_attempt_at = None
