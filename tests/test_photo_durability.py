"""A published photo survives a power cut: its directory is fsynced after the rename, and the
start-up sweep of `incoming/` publishes (never deletes) a staged photo a committed sample names."""

import os
import time
from pathlib import Path

import gateway.__main__ as gateway_main
from foodcal.store import Database, Sample
from foodcal.store.images import INCOMING_MAX_AGE_S, ImageStore
from tests.conftest import make_settings, photo, start_service


def test_publishing_fsyncs_the_directory_after_the_rename_and_every_new_directory(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os,
        "fsync",
        lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1],
    )
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1]
    )
    store = ImageStore(tmp_path)
    stored = store.put(photo())
    path = Path(stored.path)
    renamed = events.index(("replace", str(path)))
    synced = {target for kind, target in events[renamed:] if kind == "fsync"}
    # images/ab/cd holds the new name; images/ab, images and the root hold the new directories
    assert {str(path.parent), str(path.parent.parent), str(tmp_path / "images"), str(tmp_path)} <= synced

    events.clear()
    second = store.put(photo(color=(1, 2, 3)))  # the same images/ directory may exist already
    assert ("fsync", str(Path(second.path).parent)) in events


async def test_the_gateways_start_up_sweep_publishes_a_staged_photo_a_sample_names(tmp_path):
    settings = make_settings(tmp_path)
    store = ImageStore(settings.upload_dir)
    named = store.stage(photo())  # committed below, but its rename was lost in a power cut
    orphan = store.stage(photo(color=(9, 9, 9)))  # its request failed before any sample
    old = time.time() - INCOMING_MAX_AGE_S - 60
    for staged in (named, orphan):
        os.utime(staged.incoming, (old, old))

    db = Database(settings.database_url)
    db.migrate()
    with db.session() as session:
        session.add(Sample(image_sha256=named.sha256, image_path=str(named.path)))
    server = await start_service(gateway_main, settings, db)
    await server.stop(0)
    db.dispose()

    assert store.get(named.sha256) == photo()  # published, not swept
    assert not named.incoming.exists() and not orphan.incoming.exists()
    assert not store.path_for(orphan.sha256).exists()
