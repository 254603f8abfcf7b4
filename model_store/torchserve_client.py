"""The one module our services use to talk to TorchServe (inference and management over gRPC).

Every call has a deadline (a call TorchServe drops would otherwise hang forever), and TorchServe's
odd status codes become clear errors. Inference is balanced over the replicas by gRPC itself
(`model_store/channels.py`); management calls, and inference that must reach one replica, name it
by index. A hot-swap across every replica is `trainer/hot_swap.py`.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image

from foodcal.torchserve import inference_pb2, inference_pb2_grpc, management_pb2
from model_store.archive import FOOD101, NUTRITION
from model_store.channels import Replica, balanced_channel, balanced_target
from model_store.worker.photos import InvalidImage

REGISTER_TIMEOUT_S = 180.0


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
    angles: int = 1  # photos of the plate pooled into this answer


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


class TorchServeClient:
    def __init__(
        self,
        inference: Sequence[str],
        management: Sequence[str],
        timeout_s: float = 10.0,
        max_message_bytes: int = 12 * 1024 * 1024,
        inference_target: str = "",
    ) -> None:
        if len(inference) != len(management) or not inference:
            raise ValueError("TORCHSERVE_ENDPOINTS and TORCHSERVE_MANAGEMENT must list the same replicas")
        self.target = inference_target or balanced_target(inference)
        self.replicas = [Replica(i, m, max_message_bytes) for i, m in zip(inference, management, strict=True)]
        self.channel = balanced_channel(self.target, max_message_bytes)
        self.inference = inference_pb2_grpc.InferenceAPIsServiceStub(self.channel)
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings) -> TorchServeClient:
        return cls(
            settings.torchserve_endpoints,
            settings.torchserve_management,
            settings.torchserve_timeout_s,
            settings.grpc_max_message_bytes,
            settings.torchserve_inference_target,
        )

    async def close(self) -> None:
        await self.channel.close()
        for replica in self.replicas:
            await replica.close()

    # -- inference ---------------------------------------------------------------------------

    async def _predict(
        self, model: str, version: str, inputs: dict[str, bytes], what: str, replica: int | None, timeout
    ) -> dict:
        """`replica=None`: any (balanced); `timeout`: the caller's budget, at most TORCHSERVE_TIMEOUT_S."""
        timeout = self.timeout_s if timeout is None else min(timeout, self.timeout_s)
        stub = self.inference if replica is None else self.replicas[replica].inference
        request = inference_pb2.PredictionsRequest(model_name=model, model_version=version, input=inputs)
        started = time.monotonic()
        try:
            response = await stub.Predictions(request, timeout=timeout)
        except grpc.aio.AioRpcError as rpc_error:
            if rpc_error.code() == grpc.StatusCode.CANCELLED and time.monotonic() - started >= timeout:
                # Our deadline passed while TorchServe reset the stream (RST_STREAM): a timeout.
                late = f"model server did not answer {what} in time"
                raise ModelServerError(late, timed_out=True) from None
            raise _explain(rpc_error, what) from None
        return json.loads(response.prediction)

    async def classify(
        self,
        image: bytes,
        replica: int | None = None,
        model: str = FOOD101,
        timeout: float | None = None,
        more: tuple[bytes, ...] = (),
    ) -> Classification:
        """`image`: the photo as sent (the worker decodes it); InvalidImage when it does not decode.
        `more`: other angles of the same plate, classified in the same call and pooled with it."""
        inputs = {"data": image, **{f"angle_{n}": photo for n, photo in enumerate(more, start=1)}}
        result = await self._predict(model, "", inputs, f"the {model} classifier", replica, timeout)
        if "invalid_image" in result:
            raise InvalidImage(result["invalid_image"])
        return Classification(
            dishes=[(label, float(p)) for label, p in result["dishes"]],
            embedding=_f32(result["embedding"]),
            probabilities=_f32(result["probabilities"]),
            classifier=result["classifier"],
            demo=bool(result["demo"]),
            angles=int(result.get("angles", 1)),
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

    # -- management: one replica per call (reads name it by index, changes pass the replica) ---

    async def _manage(self, replica: Replica, method: str, request, what: str, timeout: float | None = None):
        try:
            call = getattr(replica.management, method)
            response = await call(request, timeout=timeout or self.timeout_s)
        except grpc.aio.AioRpcError as rpc_error:
            raise _explain(rpc_error, what) from None
        return response.msg

    async def describe(self, model: str, version: str = "", replica: int = 0) -> list[dict]:
        request = management_pb2.DescribeModelRequest(model_name=model, model_version=version)
        msg = await self._manage(self.replicas[replica], "DescribeModel", request, f"describe {model}")
        return json.loads(msg)

    async def list_models(self, replica: int = 0) -> list[str]:
        request = management_pb2.ListModelsRequest(limit=100)  # 0 would list nothing
        msg = await self._manage(self.replicas[replica], "ListModels", request, "list models")
        return [model["modelName"] for model in json.loads(msg)["models"]]

    async def registered_versions(self, model: str = NUTRITION, replica: int = 0) -> list[str]:
        return [entry["modelVersion"] for entry in await self.describe(model, "all", replica=replica)]

    async def served_version(self, model: str = NUTRITION, replica: int = 0) -> str:
        return (await self.describe(model, replica=replica))[0]["modelVersion"]

    async def register(
        self, replica: Replica, mar_name: str, batch_size: int = 1, max_batch_delay_ms: int = 5
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

    async def set_default(self, replica: Replica, model: str, version: str) -> None:
        request = management_pb2.SetDefaultRequest(model_name=model, model_version=version)
        await self._manage(replica, "SetDefault", request, f"set {model} v{version} default")

    async def unregister(self, replica: Replica, model: str, version: str) -> None:
        request = management_pb2.UnregisterModelRequest(model_name=model, model_version=version)
        await self._manage(replica, "UnregisterModel", request, f"unregister {model} v{version}")
