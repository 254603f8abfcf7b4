"""Work that must stay off the event loop, and queries that must not grow with the data."""

import asyncio
import io
import threading

import pytest
from PIL import Image
from sqlalchemy import event

from foodcal.store import AnalyzeRequest, LabelStatus, Sample
from foodcal.store.tables import utcnow
from foodcal.v1 import gateway_pb2, labeler_pb2
from gateway.analyze import INLINE_HASH_BYTES
from gateway.auth import identity_of
from gateway.samples import stats
from model_store.worker.photos import decode_for_model, validate_image
from tests.conftest import API_TOKEN, auth, photo
from tests.fixtures_labeler import chatgpt_settings
from tests.test_photo_once import camera_photo
from trainer.data import count_labelled


@pytest.fixture(autouse=True)
def cached_reads_stay_warm(monkeypatch):
    """The cached reads (challenger 2 s, budget 5 s, calibrations 10 s) expire on the wall clock: a
    slow machine between warm-up and the measured call would see more hops. Held for the test, the
    hops counted are the request's own."""
    import functools

    import gateway.analyze
    from gateway.challenger import Challengers

    monkeypatch.setattr(gateway.analyze, "Challengers", functools.partial(Challengers, refresh_s=3600.0))
    monkeypatch.setattr("gateway.policy_inputs.REFRESH_S", 3600.0)
    monkeypatch.setattr("gateway.budget.REFRESH_S", 3600.0)


def on_loop_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def statements(db, work) -> list[str]:
    """The SQL statements `work()` sends to the database."""
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return sent


def add(db, count, status=LabelStatus.LABELED, version=0, corrected=False):
    with db.session() as session:
        for index in range(count):
            sample = Sample(
                image_sha256=f"{version:08x}{index:056x}",
                image_path="x",
                label_status=status,
                pred_model_version=version,
                corrected_at=utcnow() if corrected else None,
            )
            sample.set_values("pred", (500.0 + index, 20.0, 20.0, 60.0))
            if status == LabelStatus.LABELED:
                sample.set_values("label", (450.0, 22.0, 18.0, 55.0))
            session.add(sample)


def test_count_labelled_counts_in_sql_without_loading_ids(db):
    add(db, 3)
    add(db, 2, status=LabelStatus.PENDING, version=1)
    add(db, 1, status=LabelStatus.FAILED, version=2, corrected=True)  # a correction teaches too
    counted: list[int] = []
    sql = statements(db, lambda: counted.append(count_labelled(db)))
    assert counted == [4]
    assert len(sql) == 1 and "count(" in sql[0].lower()


def test_stats_cost_the_same_queries_for_one_version_or_many(db):
    add(db, 2, version=0)

    def read():
        with db.session() as session:
            return stats(session)

    one_version = len(statements(db, read))
    for version in range(1, 6):
        add(db, 2, version=version)
    response = read()
    assert len(statements(db, read)) == one_version
    assert [(v.nutrition_version, v.samples) for v in response.by_version] == [(v, 2) for v in range(6)]
    assert response.by_version[3].mean_absolute_difference.calories_kcal == pytest.approx(50.5)
    assert response.mean_absolute_difference.calories_kcal == pytest.approx(50.5)


def test_width_and_height_are_those_of_the_upright_photo():
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait (rotate 90°)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    valid = validate_image(buffer.getvalue())
    assert (valid.width, valid.height) == (100, 300)
    assert decode_for_model(buffer.getvalue()).size == (100, 300)  # what the classifier sees


async def test_the_labeler_checks_the_image_off_the_event_loop(monkeypatch):
    import labeler.service as service
    from labeler.chatgpt import LabelFailure

    threads: list[bool] = []
    real_open = service.Image.open

    def open_image(*args, **kwargs):
        threads.append(on_loop_thread())
        return real_open(*args, **kwargs)

    class Labeler:
        async def label(self, sha256, hints, note="", image=None, more=()):
            raise LabelFailure("invalid_answer", "never asked")

    class Context:
        def set_trailing_metadata(self, metadata):
            pass

        async def abort(self, code, details, trailing_metadata=()):
            raise RuntimeError(details)

    monkeypatch.setattr(service.Image, "open", open_image)
    with pytest.raises(RuntimeError, match="never asked"):
        await service.LabelerServicer(Labeler()).LabelMeal(
            labeler_pb2.LabelMealRequest(image=photo()), Context()
        )
    assert threads == [False]


async def test_the_photo_for_chatgpt_is_prepared_off_the_event_loop(monkeypatch, stub, tmp_path):
    import labeler.chatgpt as chatgpt

    threads: list[bool] = []
    real_prepare = chatgpt.prepare_image

    def prepare(data):
        threads.append(on_loop_thread())
        return real_prepare(data)

    monkeypatch.setattr(chatgpt, "prepare_image", prepare)
    settings = chatgpt_settings(tmp_path, stub, openai_max_retries=0)
    client = chatgpt.ChatGPT(settings)
    try:
        await client.ask(photo(), [("pizza", 0.9)])
    finally:
        await client.close()
    assert threads == [False]


@pytest.mark.parametrize(
    "size, hops",
    [
        ((640, 480), ["stage", "_store_and_insert"]),
        ((4000, 3000), ["checked", "stage", "_store_and_insert"]),
    ],
)
async def test_analyze_meal_hops_to_a_thread_once_after_the_model_answers(system, monkeypatch, size, hops):
    """A thread hop costs milliseconds of latency on a machine whose idle cores sleep: a small
    photo is hashed on the loop (a large one in a thread), the photo is written while the model
    runs (`stage`), and after the model has answered one hop publishes the photo and writes its
    sample. Every hop of a warm request is listed: the rate limiter's `take` (an API client's
    call), then the analyzer's."""
    app = await system(services=("gateway",), use_chatgpt=False)
    data = camera_photo(size)
    assert (len(data) > INLINE_HASH_BYTES) == (size == (4000, 3000))
    warm_up = gateway_pb2.AnalyzeMealRequest(image=camera_photo((320, 240)))  # fills the cached reads
    await app.gateway.AnalyzeMeal(warm_up, metadata=auth(API_TOKEN), timeout=60)
    called: list[str] = []
    real = asyncio.to_thread

    def counting(function, *args, **kwargs):
        called.append(function.__name__)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    request = gateway_pb2.AnalyzeMealRequest(image=data)
    response = await app.gateway.AnalyzeMeal(request, metadata=auth(API_TOKEN), timeout=60)
    monkeypatch.undo()
    assert called == ["take", *hops]
    with app.db.session() as session:
        image_path = session.get(Sample, response.sample_id).image_path
    assert image_path in [str(p) for p in app.upload_files]


async def test_a_warm_analyze_meal_writes_through_core_statements_not_orm_sessions(system, monkeypatch):
    """The rate limiter's spend, the request id's claim, the sample and the answer are prebuilt
    Core statements on a connection: an ORM session and a statement built per request cost more
    CPU than the writes (bench/gateway_ab.py). The cached reads are warm."""
    from sqlmodel import Session

    app = await system(services=("gateway",), use_chatgpt=False)
    warm_up = gateway_pb2.AnalyzeMealRequest(image=camera_photo((320, 240)), request_id="warm-up")
    await app.gateway.AnalyzeMeal(warm_up, metadata=auth(API_TOKEN), timeout=60)
    opened: list[str] = []
    real_init = Session.__init__

    def counting(self, *args, **kwargs):
        opened.append(threading.current_thread().name)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Session, "__init__", counting)
    request = gateway_pb2.AnalyzeMealRequest(image=camera_photo((640, 480)), request_id="core")
    response = await app.gateway.AnalyzeMeal(request, metadata=auth(API_TOKEN), timeout=60)
    monkeypatch.undo()
    assert opened == []
    with app.db.session() as session:  # what was written is all there
        assert session.get(Sample, response.sample_id) is not None
        stored = session.get(AnalyzeRequest, (identity_of(API_TOKEN), "core"))
    assert stored.sample_id == response.sample_id
    assert gateway_pb2.AnalyzeMealResponse.FromString(stored.response) == response
