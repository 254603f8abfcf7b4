"""The one module our services use to talk to TorchServe (inference and management over gRPC).

Every call has a deadline (a call TorchServe drops would otherwise hang forever), and TorchServe's
odd status codes become clear errors. Several replicas may be listed: inference is spread
round-robin over healthy ones with fail-over; a hot-swap deploys to every replica or to none.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image

from foodcal.grpc_server import message_size_options
from foodcal.torchserve import inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc
from model_store.archive import FOOD101, NUTRITION

log = logging.getLogger(__name__)

REGISTER_TIMEOUT_S = 180.0
DOWN_FOR_S = 2.0  # how long a replica that refused a connection is skipped


class ModelServerError(Exception):
    """A TorchServe call failed; `unavailable`: worth retrying later (UNAVAILABLE to a client);
    `timed_out`: TorchServe did not answer within our deadline (DEADLINE_EXCEEDED)."""

    def __init__(self, message: str, unavailable: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.unavailable, self.timed_out = unavailable or timed_out, timed_out


@dataclass(frozen=True)
class Classification:
    dishes: list[tuple[str, float]]
    embedding: np.ndarray  # float32, the checkpoint's hidden size
    probabilities: np.ndarray  # float32, 101 values summing to 1
    classifier: str
    demo: bool


@dataclass(frozen=True)
class NutritionPrediction:
    calories_kcal: float
    proteins_g: float
    fats_g: float
    carbs_g: float
    version: int

    @property
    def values(self) -> tuple[float, float, float, float]:
        return (self.calories_kcal, self.proteins_g, self.fats_g, self.carbs_g)


def probe_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (180, 120, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _f32(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def _explain(error: grpc.aio.AioRpcError, what: str) -> ModelServerError:
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


class _Replica:
    def __init__(self, inference: str, management: str, max_bytes: int) -> None:
        options = message_size_options(max_bytes)
        self.address = inference
        self.inference_channel = grpc.aio.insecure_channel(inference, options=options)
        self.management_channel = grpc.aio.insecure_channel(management, options=options)
        self.inference = inference_pb2_grpc.InferenceAPIsServiceStub(self.inference_channel)
        self.management = management_pb2_grpc.ManagementAPIsServiceStub(self.management_channel)
        self.down_until = 0.0

    async def close(self) -> None:
        await self.inference_channel.close()
        await self.management_channel.close()


class TorchServeClient:
    def __init__(
        self,
        inference: Sequence[str],
        management: Sequence[str],
        timeout_s: float = 10.0,
        max_message_bytes: int = 12 * 1024 * 1024,
    ) -> None:
        if len(inference) != len(management) or not inference:
            raise ValueError("TORCHSERVE_ENDPOINTS and TORCHSERVE_MANAGEMENT must list the same replicas")
        self.replicas = [
            _Replica(i, m, max_message_bytes) for i, m in zip(inference, management, strict=True)
        ]
        self.timeout_s = timeout_s
        self._next = itertools.cycle(range(len(self.replicas)))

    @classmethod
    def from_settings(cls, settings) -> TorchServeClient:
        return cls(
            settings.torchserve_endpoints,
            settings.torchserve_management,
            settings.torchserve_timeout_s,
            settings.grpc_max_message_bytes,
        )

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.close()

    # -- inference ---------------------------------------------------------------------------

    def _order(self) -> list[_Replica]:
        """Round-robin start; replicas that recently refused connections go last."""
        start = next(self._next)
        ordered = self.replicas[start:] + self.replicas[:start]
        now = time.monotonic()
        return sorted(ordered, key=lambda r: r.down_until > now)

    async def _predict(
        self,
        model: str,
        version: str,
        inputs: dict[str, bytes],
        what: str,
        only: int | None,
        timeout: float | None = None,
    ) -> dict:
        """`timeout`: the caller's budget for this call; never more than TORCHSERVE_TIMEOUT_S."""
        timeout = self.timeout_s if timeout is None else min(timeout, self.timeout_s)
        request = inference_pb2.PredictionsRequest(model_name=model, model_version=version, input=inputs)
        error: ModelServerError | None = None
        for replica in self._order() if only is None else [self.replicas[only]]:
            try:
                response = await replica.inference.Predictions(request, timeout=timeout)
                return json.loads(response.prediction)
            except grpc.aio.AioRpcError as rpc_error:
                error = _explain(rpc_error, what)
                if not error.unavailable or rpc_error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise error from None
                replica.down_until = time.monotonic() + DOWN_FOR_S
                if len(self.replicas) > 1:
                    log.warning("torchserve %s unreachable; trying the next replica", replica.address)
        assert error is not None
        raise error

    async def classify(
        self, image: bytes, replica: int | None = None, model: str = FOOD101, timeout: float | None = None
    ) -> Classification:
        result = await self._predict(model, "", {"data": image}, f"the {model} classifier", replica, timeout)
        return Classification(
            dishes=[(label, float(p)) for label, p in result["dishes"]],
            embedding=_f32(result["embedding"]),
            probabilities=_f32(result["probabilities"]),
            classifier=result["classifier"],
            demo=bool(result["demo"]),
        )

    async def predict_nutrition(
        self,
        embedding: np.ndarray | bytes,
        probabilities: np.ndarray | bytes,
        version: int | None = None,
        replica: int | None = None,
        timeout: float | None = None,
    ) -> NutritionPrediction:
        """`version=None` asks the served (default) version; 0 is the reference table."""

        def raw(values: np.ndarray | bytes) -> bytes:
            return values if isinstance(values, bytes) else np.asarray(values, dtype="<f4").tobytes()

        inputs = {"embedding": raw(embedding), "probabilities": raw(probabilities)}
        label = f"nutrition model v{version}" if version is not None else "the nutrition model"
        result = await self._predict(
            NUTRITION, "" if version is None else str(version), inputs, label, replica, timeout
        )
        return NutritionPrediction(
            result["calories_kcal"],
            result["proteins_g"],
            result["fats_g"],
            result["carbs_g"],
            int(result["version"]),
        )

    async def identify_classifier(self) -> tuple[str, bool]:
        """(version, is the untrained demo) of the served classifier, from a real tiny prediction."""
        result = await self.classify(probe_image())
        return result.classifier, result.demo

    async def self_test(self) -> None:
        """A real prediction through both models on every replica (readiness, not just a ping)."""
        for index in range(len(self.replicas)):
            result = await self.classify(probe_image(), replica=index)
            await self.predict_nutrition(result.embedding, result.probabilities, replica=index)

    # -- management --------------------------------------------------------------------------

    async def _manage(self, replica: _Replica, method: str, request, what: str, timeout: float | None = None):
        try:
            response = await getattr(replica.management, method)(request, timeout=timeout or self.timeout_s)
        except grpc.aio.AioRpcError as rpc_error:
            raise _explain(rpc_error, what) from None
        return response.msg

    async def describe(self, model: str, version: str = "", replica: int = 0) -> list[dict]:
        request = management_pb2.DescribeModelRequest(model_name=model, model_version=version)
        return json.loads(
            await self._manage(self.replicas[replica], "DescribeModel", request, f"describe {model}")
        )

    async def list_models(self, replica: int = 0) -> list[str]:
        request = management_pb2.ListModelsRequest(limit=100)  # 0 would list nothing
        msg = await self._manage(self.replicas[replica], "ListModels", request, "list models")
        return [model["modelName"] for model in json.loads(msg)["models"]]

    async def registered_versions(self, model: str = NUTRITION, replica: int = 0) -> list[str]:
        return [entry["modelVersion"] for entry in await self.describe(model, "all", replica=replica)]

    async def served_version(self, model: str = NUTRITION, replica: int = 0) -> str:
        return (await self.describe(model, replica=replica))[0]["modelVersion"]

    async def register(
        self, replica: _Replica, mar_name: str, batch_size: int = 1, max_batch_delay_ms: int = 5
    ):
        request = management_pb2.RegisterModelRequest(
            url=mar_name,
            initial_workers=1,
            synchronous=True,
            batch_size=batch_size,
            max_batch_delay=max_batch_delay_ms,
        )
        return await self._manage(
            replica, "RegisterModel", request, f"register {mar_name}", REGISTER_TIMEOUT_S
        )

    async def set_default(self, replica: _Replica, model: str, version: str) -> None:
        request = management_pb2.SetDefaultRequest(model_name=model, model_version=version)
        await self._manage(replica, "SetDefault", request, f"set {model} v{version} default")

    async def unregister(self, replica: _Replica, model: str, version: str) -> None:
        request = management_pb2.UnregisterModelRequest(model_name=model, model_version=version)
        await self._manage(replica, "UnregisterModel", request, f"unregister {model} v{version}")

    async def _served_after_undo(self, old: list[str]) -> str:
        """What each replica serves now, asked after the undo (never assumed from the plan)."""
        now: list[str | None] = []
        for index in range(len(self.replicas)):
            try:
                now.append(await self.served_version(replica=index))
            except ModelServerError:
                now.append(None)
        if now == old and len(set(now)) == 1:
            return f"the old version is still served (v{now[0]} on every replica)"
        return "now " + ", ".join(
            f"{replica.address} serves " + (f"v{version}" if version is not None else "an unknown version")
            for replica, version in zip(self.replicas, now, strict=True)
        )

    async def hot_swap(
        self,
        mar_name: str,
        new_version: int,
        embedding_dim: int,
        keep_versions: Sequence[int] = (0,),
        drain_s: float = 0.5,
    ) -> str:
        """Serve `new_version` of the nutrition model on every replica, or on none.

        register everywhere -> check each answers a real request to that version -> set default
        everywhere -> drain -> unregister the old version (unless kept: v0 is the baseline and the
        USE_TRAINED_MODEL=false path). On any failure every replica is sent back to its old default,
        and the error says why and what each replica serves, asked after that undo (an undo step
        can fail too). Returns the version served before.
        """
        new = str(new_version)
        old: list[str] = []
        registered: list[_Replica] = []
        switched: list[tuple[_Replica, str]] = []
        probe = (np.zeros(embedding_dim, "<f4"), np.full(101, 1 / 101, "<f4"))
        try:
            old = [await self.served_version(replica=i) for i in range(len(self.replicas))]
            for index, replica in enumerate(self.replicas):
                if new in await self.registered_versions(replica=index):
                    continue  # e.g. a rollback to v0, which stays registered
                await self.register(replica, mar_name)
                registered.append(replica)
            for index in range(len(self.replicas)):
                answer = await self.predict_nutrition(*probe, version=new_version, replica=index)
                if answer.version != new_version:
                    raise ModelServerError(f"probe of v{new} was answered by v{answer.version}")
            for replica, previous in zip(self.replicas, old, strict=True):
                await self.set_default(replica, NUTRITION, new)
                switched.append((replica, previous))
        except ModelServerError as error:
            undo_failed = [
                failure
                for replica, previous in switched
                if (failure := await _quietly(self.set_default(replica, NUTRITION, previous)))
            ]
            for replica in registered:
                await _quietly(self.unregister(replica, NUTRITION, new))
            served = await self._served_after_undo(old)
            undo = f"; undo failed: {'; '.join(undo_failed)}" if undo_failed else ""
            raise ModelServerError(
                f"hot-swap to nutrition v{new} failed: {error}; {served}{undo}", error.unavailable
            ) from None
        # In-flight requests on the old version finish during the drain (see TORCHSERVE.md).
        await asyncio.sleep(drain_s)
        for replica, previous in zip(self.replicas, old, strict=True):
            if previous != new and int(previous) not in keep_versions:
                await _quietly(self.unregister(replica, NUTRITION, previous))
        return old[0]


async def _quietly(call) -> str:
    """Run an undo step; its failure is logged and returned (empty when it worked)."""
    try:
        await call
    except ModelServerError as error:
        log.warning("rollback step failed: %s", error)
        return str(error)
    return ""
