"""The gateway and TorchServe: the nutrition version it asks for, the served models it names, and a
TorchServe that is down."""

import grpc
import pytest

from foodcal.v1 import common_pb2
from model_store.archive import build_nutrition_mar, nutrition_mar_name
from model_store.build import reference_model
from tests.conftest import free_port
from tests.test_gateway import analyze, stats
from trainer.hot_swap import NutritionReplicas

NS = common_pb2


async def test_served_trained_version_is_used_only_when_flag_says_so(system, torchserve, model_store):
    v1 = reference_model(model_store.parent / "checkpoints" / "food101")
    v1.table.mul_(2.0)
    build_nutrition_mar(v1, 1, model_store / nutrition_mar_name(1))
    await NutritionReplicas(torchserve.client).hot_swap(nutrition_mar_name(1), 1, embedding_dim=48)
    # Gateways only: a trainer would reconcile TorchServe back to the version its database serves.
    trained = await system(services=("gateway",), use_chatgpt=False)
    heuristic = await system(services=("gateway",), use_chatgpt=False, use_trained_model=False)
    with_trained, with_table = await analyze(trained), await analyze(heuristic)
    assert with_trained.model_versions.nutrition == 1 and with_trained.source == NS.NUTRITION_SOURCE_OWN_MODEL
    assert with_table.model_versions.nutrition == 0 and with_table.source == NS.NUTRITION_SOURCE_REFERENCE
    assert with_trained.nutrition.calories_kcal == pytest.approx(
        2 * with_table.nutrition.calories_kcal, rel=1e-4
    )


async def test_model_server_down_is_unavailable_and_nothing_is_stored(system):
    dead = f"127.0.0.1:{free_port()}"
    app = await system(torchserve_endpoints=[dead], torchserve_management=[dead], torchserve_timeout_s=2.0)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await analyze(app)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "model server" in raised.value.details()
    assert app.sample_count() == 0
    assert app.upload_files == []  # nor the photo: an image without a sample is an orphan


async def test_stats_of_an_empty_system_are_zero_and_name_the_served_models(system):
    app = await system(use_chatgpt=False)
    totals = await stats(app)
    assert (totals.total_samples, totals.training_data_samples, totals.pending_labels) == (0, 0, 0)
    assert totals.served.nutrition == 0
    assert totals.served.classifier.startswith("demo@") and totals.served.classifier_is_demo
