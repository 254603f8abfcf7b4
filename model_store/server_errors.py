"""TorchServe's odd status codes as clear errors: what failed, and whether to retry later."""

from __future__ import annotations

import grpc


class ModelServerError(Exception):
    """A TorchServe call failed; `unavailable`: worth retrying later (UNAVAILABLE to a client);
    `timed_out`: TorchServe did not answer within our deadline (DEADLINE_EXCEEDED)."""

    def __init__(self, message: str, unavailable: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.unavailable, self.timed_out = unavailable or timed_out, timed_out


def explain(error: grpc.aio.AioRpcError, what: str) -> ModelServerError:
    code = error.code()
    details = (error.details() or "").splitlines()[0] if error.details() else ""  # drop Java class names
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ModelServerError(f"model server did not answer {what} in time", timed_out=True)
    if code == grpc.StatusCode.UNAVAILABLE and "Prediction failed" not in details:
        return ModelServerError(f"model server unreachable ({what})", unavailable=True)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ModelServerError(f"model server could not run {what}: the handler failed")
    if "Worker died" in details or "No worker" in details:
        # The model process died or is restarting (e.g. TorchServe shutting down): try again later.
        return ModelServerError(f"model server worker for {what} is down ({details})", unavailable=True)
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.NOT_FOUND) and (
        "not found" in details.lower() or "does not exist" in details
    ):
        return ModelServerError(f"{what}: model or version not registered ({details})")
    if code == grpc.StatusCode.UNKNOWN and not details:
        return ModelServerError(f"{what}: refused by the model server (version already registered?)")
    return ModelServerError(f"{what}: {code.name} {details}".strip())
