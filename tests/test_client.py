"""`python -m foodcal.cli` against a real gRPC server that answers like the gateway."""

import asyncio
import json
import re

import grpc
import pytest

from foodcal.cli import main as cli
from foodcal.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

NS = common_pb2
SAMPLE_ID = "5" * 32
F32 = 19.399999618530273  # what a float32 19.4 becomes in a double field


def nutrition(kcal=650.0000238418579, proteins=F32, fats=2.1e-11, carbs=80.0):
    return NS.Nutrition(calories_kcal=kcal, proteins_g=proteins, fats_g=fats, carbs_g=carbs)


ANALYZED = gateway_pb2.AnalyzeMealResponse(
    sample_id=SAMPLE_ID,
    dishes=[
        NS.DishCandidate(label="pizza", probability=0.6234),
        NS.DishCandidate(label="lasagna", probability=0.1),
    ],
    nutrition=nutrition(),
    source=NS.NUTRITION_SOURCE_CHATGPT,
    own_prediction=nutrition(kcal=612.4),
    chatgpt_label=NS.Label(
        source=NS.NUTRITION_SOURCE_CHATGPT, dish="margherita pizza", confidence=0.8, model="gpt-5-mini"
    ),
    model_versions=NS.ModelVersions(
        classifier="demo@1a2b", classifier_is_demo=True, nutrition=0, labeler_model="gpt-5-mini"
    ),
    label_status=NS.LABEL_STATUS_LABELED,
)
VERSIONS = gateway_pb2.GatewayServiceListModelVersionsResponse(
    versions=[
        NS.ModelVersion(version=0, served=True, description="reference table"),
        NS.ModelVersion(
            version=1, run_id="r" * 32, metrics=NS.EvaluationMetrics(score=0.123456789, samples=20)
        ),
    ],
    served_version=0,
)
STATS = gateway_pb2.GetStatsResponse(
    total_samples=3,
    training_data_samples=0,
    pending_labels=1,
    mean_absolute_difference=nutrition(kcal=37.5),
    served=NS.ModelVersions(classifier="demo@1a2b", classifier_is_demo=True, nutrition=0),
)


ITEMS = [
    NS.FoodItem(name="pizza crust", grams=150, nutrition=nutrition(kcal=400, proteins=13, fats=6, carbs=72)),
    NS.FoodItem(name="mozzarella", grams=60, nutrition=nutrition(kcal=180, proteins=13, fats=14, carbs=1)),
]
NOTED = gateway_pb2.AnalyzeMealResponse()
NOTED.CopyFrom(ANALYZED)
NOTED.note = "two slices, no cheese"
NOTED.chatgpt_label.portion_g = 210.0
NOTED.chatgpt_label.items.extend(ITEMS)
NOTED.own_portion.CopyFrom(NS.Portion(grams=203.4, basis="reference servings (version 0)"))
RECEIVED = []


class Gateway(gateway_pb2_grpc.GatewayServiceServicer):
    async def AnalyzeMeal(self, request, context):
        RECEIVED.append(request)
        return NOTED if request.note else ANALYZED

    async def CorrectSample(self, request, context):
        RECEIVED.append(request)
        sample = gateway_pb2.Sample(
            sample_id=request.sample_id,
            own_prediction=nutrition(kcal=612.4),
            own_portion=NOTED.own_portion,
            note="no cheese",
            corrected=True,
            correction=request.nutrition,
            correction_items=request.items,
        )
        return gateway_pb2.CorrectSampleResponse(sample=sample)

    async def ListModelVersions(self, request, context):
        return VERSIONS

    async def GetStats(self, request, context):
        return STATS

    async def EndChallenger(self, request, context):
        RECEIVED.append(request)
        version = request.version if request.HasField("version") else 7
        return gateway_pb2.GatewayServiceEndChallengerResponse(version=version, baseline_version=2)


@pytest.fixture
async def gateway():
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(Gateway(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def run(gateway, capsys, monkeypatch, *argv):
    monkeypatch.setenv("FOODCAL_TOKEN", "t")
    code = await asyncio.to_thread(cli.main, ["--address", gateway, *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


async def test_analyze_prints_a_short_summary_without_float_noise(gateway, capsys, monkeypatch, tmp_path):
    (tmp_path / "meal.jpg").write_bytes(b"x")
    out = await run(gateway, capsys, monkeypatch, "analyze", str(tmp_path / "meal.jpg"))
    assert "pizza" in out and "62%" in out and "margherita pizza" in out and "80%" in out
    assert "650 kcal" in out and "19.4 g" in out and "0.0 g" in out and "80.0 g" in out
    assert "19.399" not in out and "e-11" not in out and "650.00" not in out
    assert "ChatGPT (gpt-5-mini)" in out and "nutrition version 0" in out and "demo" in out
    assert "labeled" in out and SAMPLE_ID in out
    assert len(out.splitlines()) <= 8 and "{" not in out


async def test_versions_lists_version_zero_and_marks_the_served_one(gateway, capsys, monkeypatch):
    out = await run(gateway, capsys, monkeypatch, "versions")
    rows = [line.split() for line in out.splitlines()]
    zero = next(row for row in rows if row[:1] == ["0"])
    one = next(row for row in rows if row[:1] == ["1"])
    assert "served" in zero and "served" not in one
    assert "0.1235" in one and "reference" in zero


async def test_stats_summary_shows_zero_counts(gateway, capsys, monkeypatch):
    out = await run(gateway, capsys, monkeypatch, "stats")
    assert re.search(r"^training data samples\s+0$", out, flags=re.M), out
    assert re.search(r"^pending labels\s+1$", out, flags=re.M), out
    assert "38 kcal" in out and "19.4 g" in out and "19.399" not in out


@pytest.mark.parametrize("where", ["before", "after"])
async def test_json_prints_the_full_message_with_defaults(gateway, capsys, monkeypatch, where):
    argv = ["--json", "versions"] if where == "before" else ["versions", "--json"]
    printed = json.loads(await run(gateway, capsys, monkeypatch, *argv))
    assert printed["served_version"] == 0 and printed["versions"][0]["version"] == 0
    assert printed["versions"][0]["run_id"] == ""  # defaults included
    analyzed = json.loads(await run(gateway, capsys, monkeypatch, "analyze", __file__, "--json"))
    assert analyzed["model_versions"]["nutrition"] == 0 and analyzed["duplicate_image"] is False


async def test_analyze_with_a_note_shows_it_with_the_items_table_and_both_portions(
    gateway, capsys, monkeypatch, tmp_path
):
    (tmp_path / "meal.jpg").write_bytes(b"x")
    note = "two slices, no cheese"
    out = await run(gateway, capsys, monkeypatch, "analyze", str(tmp_path / "meal.jpg"), "--note", note)
    assert RECEIVED[-1].note == note
    assert re.search(rf"^note\s+{note}$", out, flags=re.M), out
    assert re.search(r"^nutrition\s+650 kcal .* carbs 80.0 g  for 210 g$", out, flags=re.M), out
    assert re.search(r"^our portion\s+203 g: reference servings \(version 0\)$", out, flags=re.M), out
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["items", "grams", "kcal", "proteins", "fats", "carbs"]
    assert table[1].split() == ["pizza", "crust", "150", "400", "13.0", "6.0", "72.0"]
    assert table[-1].split() == ["(sum)", "210", "580", "26.0", "20.0", "73.0"]


async def test_correct_sends_items_alone_or_totals_and_refuses_half_totals(gateway, capsys, monkeypatch):
    sample_id = "6" * 32
    out = await run(
        gateway, capsys, monkeypatch, "correct", sample_id, "--item", "rice:150:195:4:0.5:42",
        "--item", "chicken: grilled:100:165:31:3.6:0",
    )  # fmt: skip
    request = RECEIVED[-1]
    assert not request.HasField("nutrition") and [i.name for i in request.items] == [
        "rice",
        "chicken: grilled",
    ]
    assert request.items[1].nutrition.proteins_g == 31 and request.items[0].grams == 150
    assert "corrected items" in out and "chicken: grilled" in out and "note" in out
    await run(
        gateway,
        capsys,
        monkeypatch,
        "correct",
        sample_id,
        *["--calories", "1", "--proteins", "0", "--fats", "0", "--carbs", "0"],
    )
    assert RECEIVED[-1].HasField("nutrition") and not RECEIVED[-1].items
    monkeypatch.setenv("FOODCAL_TOKEN", "t")
    half = ["--address", gateway, "correct", sample_id, "--calories", "500"]
    assert await asyncio.to_thread(cli.main, half) == 2
    with pytest.raises(SystemExit):
        cli.main(["--address", gateway, "correct", sample_id, "--item", "rice:lots"])


async def test_end_challenger_ends_the_live_one_or_the_version_given(gateway, capsys, monkeypatch):
    RECEIVED.clear()
    assert "7" in await run(gateway, capsys, monkeypatch, "end-challenger")
    assert "3" in await run(gateway, capsys, monkeypatch, "end-challenger", "3")
    assert not RECEIVED[0].HasField("version") and RECEIVED[1].version == 3
