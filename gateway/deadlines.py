"""The caller's deadline, shared out to the calls the gateway makes on its behalf.

A client that gives AnalyzeMeal 5 s must get an answer (or an error) within 5 s: TorchServe, the
labeler and the trainer each get at most what is left, never their full default on top of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc

MIN_TIMEOUT_S = 0.01  # grpc treats 0 as "no deadline"; a spent budget still ends the call at once


@dataclass(frozen=True)
class Budget:
    deadline: float | None  # time.monotonic() when the caller gives up; None: it set no deadline

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext) -> Budget:
        remaining = context.time_remaining()
        return cls(None if remaining is None else time.monotonic() + remaining)

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(None)

    def timeout(self, cap: float, reserve_s: float = 0.0) -> float:
        """At most `cap`, and at most what is left once `reserve_s` is kept for the work after."""
        if self.deadline is None:
            return cap
        return max(MIN_TIMEOUT_S, min(cap, self.deadline - time.monotonic() - reserve_s))

    def timeout_or_none(self, reserve_s: float = 0.0) -> float | None:
        """What is left (less `reserve_s`), or None to let the callee use its own limit."""
        return None if self.deadline is None else self.timeout(float("inf"), reserve_s)
