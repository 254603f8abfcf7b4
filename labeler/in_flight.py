"""The in-flight guard of paid label calls, held in the database so that it holds across labeler
replicas (docs/deploy.md): whoever claims a cache key asks ChatGPT; the others wait for its answer
in the label cache, or take the claim over once it expires (its holder died mid-call)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from foodcal.store import Database, LabelCallInFlight
from foodcal.store.tables import utcnow

Key = tuple[str, str, int, str]  # the label cache's: sha256, model, prompt version, note's sha256


def new_owner() -> str:
    return uuid.uuid4().hex


def claim(db: Database, key: Key, owner: str, ttl_s: float) -> bool:
    """True: `owner` holds the key for `ttl_s`; False: another live call holds it."""
    expires = utcnow() + timedelta(seconds=ttl_s)
    with db.session() as session:
        row = session.get(LabelCallInFlight, key, with_for_update=True)
        if row is not None:
            if row.expires_at > utcnow():
                return False
            row.owner, row.expires_at = owner, expires  # its holder died mid-call
            session.add(row)
            return True
        sha256, model, prompt_version, note_key = key
        session.add(
            LabelCallInFlight(
                image_sha256=sha256,
                model=model,
                prompt_version=prompt_version,
                note_sha256=note_key,
                owner=owner,
                expires_at=expires,
            )
        )
        try:
            session.flush()
        except IntegrityError:  # another replica inserted it first
            session.rollback()
            return False
        return True


def release(db: Database, key: Key, owner: str) -> None:
    sha256, model, prompt_version, note_key = key
    with db.session() as session:
        session.exec(
            delete(LabelCallInFlight).where(
                LabelCallInFlight.image_sha256 == sha256,
                LabelCallInFlight.model == model,
                LabelCallInFlight.prompt_version == prompt_version,
                LabelCallInFlight.note_sha256 == note_key,
                LabelCallInFlight.owner == owner,
            )
        )
