"""A plate from several angles, plates grouped into a meal, and ours beside ChatGPT's in the CLI."""

import hashlib

import grpc
import numpy as np
import pytest

from foodcal.cli import summaries
from foodcal.store import open_image_store
from foodcal.v1 import common_pb2, gateway_pb2
from tests.conftest import API_TOKEN, auth, photo

OTHER_CLIENT = "test-other-client-token"


def _values(n: common_pb2.Nutrition) -> list[float]:
    return [n.calories_kcal, n.proteins_g, n.fats_g, n.carbs_g]


async def test_several_angles_are_classified_together_pooled_stored_and_labelled_in_one_payment(
    system, torchserve, openai_stub
):
    app = await system()
    angles = [photo(color=(200, 80, 40)), photo(color=(190, 90, 50)), photo(color=(60, 140, 200))]
    request = gateway_pb2.AnalyzeMealRequest(image=angles[0], more_images=angles[1:])
    response = await app.gateway.AnalyzeMeal(request, metadata=auth(API_TOKEN))
    assert response.photos == 3 and response.label_status == common_pb2.LABEL_STATUS_LABELED
    # One ChatGPT call, with every angle in it.
    assert openai_stub.calls == 1
    parts = openai_stub.requests[0]["messages"][1]["content"]
    assert sum(part["type"] == "image_url" for part in parts) == 3
    assert "3 photos show the same plate" in parts[0]["text"]
    # One sample, every photo stored.
    sample = (
        await app.gateway.GetSample(
            gateway_pb2.GetSampleRequest(sample_id=response.sample_id), metadata=auth()
        )
    ).sample
    hashes = [hashlib.sha256(p).hexdigest() for p in angles]
    assert sample.image_sha256 == hashes[0] and list(sample.more_image_sha256s) == hashes[1:]
    store = open_image_store(app.settings)
    assert [store.get(h) for h in hashes] == angles
    # Pooled as the handler says: the mean embedding, probabilities from the mean log-probability.
    singles = [await torchserve.client.classify(p) for p in angles]
    with app.db.session() as session:
        from foodcal.store import Sample

        row = session.get(Sample, response.sample_id)
        embedding = np.frombuffer(row.embedding, "<f4")
        probabilities = np.frombuffer(row.class_probabilities, "<f4")
    assert embedding == pytest.approx(np.mean([s.embedding for s in singles], axis=0), abs=1e-4)
    log_mean = np.mean([np.log(np.maximum(s.probabilities, 1e-12)) for s in singles], axis=0)
    expected = np.exp(log_mean - log_mean.max()) / np.exp(log_mean - log_mean.max()).sum()
    assert probabilities == pytest.approx(expected, abs=1e-4)

    # One photo keeps working as before.
    single = await app.gateway.AnalyzeMeal(
        gateway_pb2.AnalyzeMealRequest(image=photo(color=(10, 200, 10))), metadata=auth(API_TOKEN)
    )
    assert single.photos == 1


@pytest.mark.parametrize(
    "more, reason",
    [
        ([photo(color=(i, 50, 50)) for i in (10, 60, 110, 160)], "at most 3"),
        ([photo()], "the same photo twice"),
        ([b"not a picture"], ""),
    ],
    ids=["five_photos", "the_same_photo_twice", "an_angle_that_is_not_a_picture"],
)
async def test_bad_angles_are_refused_and_nothing_is_stored(system, more, reason):
    app = await system(use_chatgpt=False)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(image=photo(), more_images=more), metadata=auth(API_TOKEN)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in raised.value.details()
    assert app.sample_count() == 0 and not app.upload_files


async def test_plates_with_one_meal_id_form_a_meal_of_their_client_and_its_sum(system):
    app = await system(use_chatgpt=False, api_tokens=[API_TOKEN, OTHER_CLIENT])
    ids = []
    for color, meal in (((250, 0, 0), "lunch"), ((0, 250, 0), "lunch"), ((0, 0, 250), "dinner")):
        response = await app.gateway.AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(image=photo(color=color), meal_id=meal), metadata=auth(API_TOKEN)
        )
        assert response.meal_id == meal
        ids.append((response.sample_id, response.nutrition))
    truth = common_pb2.Nutrition(calories_kcal=321, proteins_g=12, fats_g=9, carbs_g=40)
    await app.gateway.CorrectSample(
        gateway_pb2.CorrectSampleRequest(sample_id=ids[0][0], nutrition=truth), metadata=auth(API_TOKEN)
    )
    lunch = await app.gateway.GetMeal(gateway_pb2.GetMealRequest(meal_id="lunch"), metadata=auth(API_TOKEN))
    assert [p.sample_id for p in lunch.plates] == [ids[0][0], ids[1][0]] and lunch.plates_count == 2
    # The correction wins over what was shown for the first plate.
    assert _values(lunch.total) == pytest.approx(np.add(_values(truth), _values(ids[1][1])))
    assert "total" in summaries.summary(lunch) and "2 plates" in summaries.summary(lunch)
    for metadata, meal_id, code in (
        (auth(OTHER_CLIENT), "lunch", grpc.StatusCode.NOT_FOUND),  # another client's meal: none
        (auth(API_TOKEN), "breakfast", grpc.StatusCode.NOT_FOUND),
        (auth(API_TOKEN), "", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await app.gateway.GetMeal(gateway_pb2.GetMealRequest(meal_id=meal_id), metadata=metadata)
        assert raised.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await app.gateway.AnalyzeMeal(
            gateway_pb2.AnalyzeMealRequest(image=photo(), meal_id="x" * 65), metadata=auth(API_TOKEN)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_analyze_shows_ours_beside_chatgpts_and_their_difference():
    ours = common_pb2.Nutrition(calories_kcal=381, proteins_g=14, fats_g=12, carbs_g=50)
    theirs = common_pb2.Nutrition(calories_kcal=650, proteins_g=27, fats_g=24, carbs_g=80)
    response = gateway_pb2.AnalyzeMealResponse(
        sample_id="s",
        nutrition=theirs,
        source=common_pb2.NUTRITION_SOURCE_CHATGPT,
        own_prediction=ours,
        chatgpt_label=common_pb2.Label(nutrition=theirs, source=common_pb2.NUTRITION_SOURCE_CHATGPT),
        difference=common_pb2.Nutrition(calories_kcal=-269, proteins_g=-13, fats_g=-12, carbs_g=-30),
    )
    text = summaries.analyzed(response)
    assert "381 kcal" in text and "650 kcal" in text and "-269 kcal" in text
    assert "ours - ChatGPT" in text


async def test_deleting_a_plate_deletes_its_other_angles_unless_another_sample_has_them(system):
    app = await system(use_chatgpt=False)
    first, shared, own = photo(color=(20, 20, 200)), photo(color=(200, 200, 20)), photo(color=(20, 200, 200))
    kept = await app.gateway.AnalyzeMeal(
        gateway_pb2.AnalyzeMealRequest(image=photo(color=(120, 30, 30)), more_images=[shared]),
        metadata=auth(),
    )
    gone = await app.gateway.AnalyzeMeal(
        gateway_pb2.AnalyzeMealRequest(image=first, more_images=[shared, own]), metadata=auth()
    )
    store = open_image_store(app.settings)
    await app.gateway.DeleteSample(gateway_pb2.DeleteSampleRequest(sample_id=gone.sample_id), metadata=auth())
    hashes = {
        name: hashlib.sha256(p).hexdigest()
        for name, p in (("first", first), ("shared", shared), ("own", own))
    }
    for name, expected in (("first", False), ("own", False), ("shared", True)):
        try:
            store.get(hashes[name])
            present = True
        except FileNotFoundError:
            present = False
        assert present is expected, name
    sample = (
        await app.gateway.GetSample(gateway_pb2.GetSampleRequest(sample_id=kept.sample_id), metadata=auth())
    ).sample
    assert list(sample.more_image_sha256s) == [hashes["shared"]]
