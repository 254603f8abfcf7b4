"""Content-addressed image storage: the same photo twice is one file and one sha256."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ImageStorageError(OSError):
    """The image could not be written (disk full, read-only directory)."""


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    path: str
    already_stored: bool


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    """Local directory backend: `<root>/images/ab/cd/<sha256>`.

    Paths are only ever derived from a validated sha256, so no field can steer a path.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "images"

    def path_for(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> StoredImage:
        sha256 = sha256_of(data)
        path = self.path_for(sha256)
        if path.exists():
            return StoredImage(sha256, str(path), already_stored=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write to a temp file and rename: a crash never leaves a half-written image.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as error:
            raise ImageStorageError(f"could not store the image: {error.strerror or error}") from error
        return StoredImage(sha256, str(path), already_stored=False)

    def get(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()
