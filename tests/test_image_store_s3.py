"""The S3 backend against a local S3-compatible server (moto in server mode) on loopback."""

import boto3
import pytest
from moto.server import ThreadedMotoServer

from foodcal.settings import load_settings
from foodcal.store import ImageStore, S3ImageStore, open_image_store
from foodcal.v1 import gateway_pb2
from tests.conftest import auth, free_port, photo


@pytest.fixture
def s3(monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="meals")
    yield endpoint
    server.stop()


def test_url_chooses_the_backend(tmp_path):
    assert isinstance(open_image_store(load_settings(_env_file=None, upload_dir=tmp_path)), ImageStore)
    settings = load_settings(
        _env_file=None, image_store_url="s3://meals/prod", s3_endpoint_url="http://127.0.0.1:1"
    )
    assert isinstance(open_image_store(settings), S3ImageStore)


def test_s3_store_is_content_addressed(s3):
    store = S3ImageStore("s3://meals/prod", s3)
    first, again = store.put(photo()), store.put(photo())
    assert first.sha256 == again.sha256 and not first.already_stored and again.already_stored
    assert first.path == f"s3://meals/prod/images/{first.sha256[:2]}/{first.sha256[2:4]}/{first.sha256}"
    assert store.get(first.sha256) == photo()
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="meals")["Contents"]]
    assert keys == [f"prod/images/{first.sha256[:2]}/{first.sha256[2:4]}/{first.sha256}"]
    with pytest.raises(ValueError):
        store.get("../../secret")


def test_s3_store_deletes_a_photo_and_only_that_one(s3):
    store = S3ImageStore("s3://meals/prod", s3)
    gone, kept = store.put(photo()), store.put(photo((1, 200, 90)))
    assert store.delete(gone.sha256)
    with pytest.raises(FileNotFoundError):
        store.get(gone.sha256)
    assert store.get(kept.sha256) == photo((1, 200, 90))
    assert store.delete(gone.sha256)  # S3 answers the same for a photo deleted already


def test_missing_bucket_is_a_clear_storage_error(s3):
    from foodcal.store.images import ImageStorageError

    with pytest.raises(ImageStorageError, match="could not store the image"):
        S3ImageStore("s3://no-such-bucket", s3).put(photo())


async def test_gateway_stores_photos_in_s3_and_labels_from_there(system, s3, openai_stub):
    app = await system(
        use_own_model_instead_chatgpt=True, image_store_url="s3://meals/foodcal", s3_endpoint_url=s3
    )
    response = await app.gateway.AnalyzeMeal(gateway_pb2.AnalyzeMealRequest(image=photo()), metadata=auth())
    from foodcal.v1 import common_pb2
    from tests.test_gateway import wait_for_status

    sample = await wait_for_status(app, response.sample_id, common_pb2.LABEL_STATUS_LABELED)
    assert sample.chatgpt_label.nutrition.calories_kcal == 650.0  # the worker read the image back from S3
    assert app.upload_files == []
    listed = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="meals", Prefix="foodcal/images/")
    assert listed["KeyCount"] == 1
