"""The S3-compatible image store (boto3): `s3://bucket/prefix/images/ab/cd/<sha256>`; the
interface and the local directory backend are foodcal/store/images.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from foodcal.store.images import ImageStorageError, StoredImage, object_name, sha256_of


class S3ImageStore:
    """S3-compatible backend (boto3): `s3://bucket/prefix/images/ab/cd/<sha256>`."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30
            ),
        )

    def _key(self, sha256: str) -> str:
        return f"{self.prefix}/{object_name(sha256)}" if self.prefix else object_name(sha256)

    def stage(self, data: bytes, sha256: str | None = None) -> DeferredPut:
        """S3 has no rename: the photo is uploaded when it is published."""
        return DeferredPut(self, data, sha256 or sha256_of(data))

    def sweep_incoming(self, referenced: Callable[[str], bool] = lambda sha: False) -> int:
        """Nothing is staged on disk for S3: nothing to sweep."""
        return 0

    def put(self, data: bytes, sha256: str | None = None) -> StoredImage:
        from botocore.exceptions import BotoCoreError, ClientError

        sha256 = sha256 or sha256_of(data)
        key = self._key(sha256)
        url = f"s3://{self.bucket}/{key}"
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return StoredImage(sha256, url, already_stored=True)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise ImageStorageError(f"could not store the image: {error}") from error
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/octet-stream"
            )
        except (BotoCoreError, ClientError) as error:
            raise ImageStorageError(f"could not store the image: {error}") from error
        return StoredImage(sha256, url, already_stored=False)

    def delete(self, sha256: str) -> bool:
        """S3 deletes whether or not the object exists: True unless the request failed."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(sha256))
        except (BotoCoreError, ClientError) as error:
            raise ImageStorageError(f"could not delete image {sha256[:12]}…: {error}") from error
        return True

    def get(self, sha256: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"no image {sha256[:12]}… in the bucket") from error
            raise OSError(f"could not read image {sha256[:12]}…: {error}") from error
        except BotoCoreError as error:
            raise OSError(f"could not read image {sha256[:12]}…: {error}") from error


@dataclass(frozen=True)
class DeferredPut:
    """S3ImageStore's StagedImage: nothing is written before `publish`."""

    store: S3ImageStore
    data: bytes
    sha256: str

    def publish(self) -> StoredImage:
        return self.store.put(self.data, self.sha256)

    def discard(self) -> None:
        pass
