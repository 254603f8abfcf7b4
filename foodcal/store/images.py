"""Content-addressed image storage: the same photo twice is one object and one sha256.

One small interface, two backends chosen by URL: a local directory (the default, `UPLOAD_DIR`,
here) or an S3-compatible bucket (`IMAGE_STORE_URL=s3://bucket/prefix`, `S3_ENDPOINT_URL` for MinIO,
Ceph or any other S3-compatible server: foodcal/store/s3_images.py). Names are always
`images/ab/cd/<sha256>`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Photos are staged here, beside `images/` on the same file system, so publishing is one rename.
INCOMING_DIR = "incoming"
# A staged photo is published or discarded within one AnalyzeMeal (seconds): one older than this
# was left by a process that died, and is swept.
INCOMING_MAX_AGE_S = 3600.0
# Sample.image_path once RETENTION_DAYS removed the photo: the sample's numbers and features stay.
PHOTO_REMOVED = "removed"


class ImageStorageError(OSError):
    """The image could not be written (disk full, read-only directory)."""


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    path: str
    already_stored: bool


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256(value: str) -> bool:
    return bool(_SHA256.fullmatch(value))  # fullmatch: "$" alone would let a trailing newline in


def object_name(sha256: str) -> str:
    """The only way a storage name is made: from a validated sha256, so no field can steer it."""
    if not is_sha256(sha256):
        raise ValueError("not a sha256 hex digest")
    return f"images/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def _fsync_directory(path: Path) -> None:
    """A rename or a new entry survives a power cut only once its directory is on disk too."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _could_not_store(error: OSError) -> ImageStorageError:
    return ImageStorageError(f"could not store the image: {error.strerror or error}")


@dataclass(frozen=True)
class StagedImage:
    """A photo written but not yet under its name (`incoming`; None when it was stored already)."""

    sha256: str
    path: Path
    incoming: Path | None

    def publish(self) -> StoredImage:
        if self.incoming is None:
            return StoredImage(self.sha256, str(self.path), already_stored=True)
        try:
            created = []
            try:
                os.replace(self.incoming, self.path)
            except FileNotFoundError:  # the first photo under its images/ab/cd/ directory
                created = [d for d in reversed(self.path.parents[:3]) if not d.exists()]
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.incoming, self.path)
            # The sample that names this photo is committed next: its name must be durable first.
            for directory in {self.path.parent, *(d.parent for d in created)}:
                _fsync_directory(directory)
        except OSError as error:
            self.discard()
            raise _could_not_store(error) from error
        return StoredImage(self.sha256, str(self.path), already_stored=False)

    def discard(self) -> None:
        """Nothing left behind; a published photo stays (its incoming name is gone)."""
        if self.incoming is not None:
            self.incoming.unlink(missing_ok=True)


class ImageStore:
    """Local directory backend: `<root>/images/ab/cd/<sha256>`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.incoming = self.root / INCOMING_DIR

    def path_for(self, sha256: str) -> Path:
        return self.root / object_name(sha256)

    def put(self, data: bytes, sha256: str | None = None) -> StoredImage:
        """`sha256`: the caller's hash of `data`, when it has one (a photo is hashed once)."""
        return self.stage(data, sha256).publish()

    def stage(self, data: bytes, sha256: str | None = None) -> StagedImage:
        """The photo written and fsynced under `incoming/`, not yet under its name: AnalyzeMeal
        writes it while the model runs and publishes it (one rename) only once the model has
        answered."""
        sha256 = sha256 or sha256_of(data)
        path = self.path_for(sha256)
        if path.exists():
            return StagedImage(sha256, path, incoming=None)
        try:
            # Written under a temporary name in one directory, renamed into place: a crash never
            # leaves a half-written image under its name, and sweep_incoming finds what it left.
            try:
                fd, incoming = tempfile.mkstemp(dir=self.incoming)
            except FileNotFoundError:
                self.incoming.mkdir(parents=True, exist_ok=True)
                fd, incoming = tempfile.mkstemp(dir=self.incoming)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except BaseException:
                Path(incoming).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise _could_not_store(error) from error
        return StagedImage(sha256, path, Path(incoming))

    def get(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()

    def delete(self, sha256: str) -> bool:
        """False when there was nothing to delete (deleted already)."""
        try:
            self.path_for(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def sweep_incoming(
        self, older_than_s: float = INCOMING_MAX_AGE_S, referenced: Callable[[str], bool] = lambda sha: False
    ) -> int:
        """Removes photos staged and never published or discarded (their process died); a staged
        photo younger than `older_than_s` may be another gateway's write in progress and stays.
        One that `referenced(sha256)` says a committed sample names, and that is missing under its
        name (a rename lost in a power cut), is published instead. Returns how many were removed."""
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            entries = list(os.scandir(self.incoming))
        except OSError:  # none staged yet, or an unusable directory: each request will say so
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    if self._restored(Path(entry.path), referenced):
                        continue
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass  # published or discarded meanwhile
        return removed

    def _restored(self, incoming: Path, referenced: Callable[[str], bool]) -> bool:
        sha256 = sha256_of(incoming.read_bytes())
        path = self.path_for(sha256)
        if path.exists() or not referenced(sha256):
            return False
        StagedImage(sha256, path, incoming).publish()
        log.warning("restored photo %s… a committed sample names (its rename was lost)", sha256[:12])
        return True


class Staged(Protocol):
    """A photo written (or not, on S3) and not yet under its name: StagedImage or DeferredPut."""

    @property
    def sha256(self) -> str: ...

    def publish(self) -> StoredImage: ...

    def discard(self) -> None: ...
