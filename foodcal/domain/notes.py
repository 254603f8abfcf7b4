"""The person's note sent with a photo: optional plain text, checked the same way everywhere."""

from __future__ import annotations

import hashlib
import unicodedata

MAX_NOTE_CHARS = 500
# Checked before cleaning, so a huge note costs nothing: cleaning may shorten a note that keeps
# within MAX_NOTE_CHARS, but not a note sent at more than twice it.
MAX_NOTE_SENT_CHARS = 2 * MAX_NOTE_CHARS


class InvalidNote(ValueError):
    """A note that is too long; the message says so."""


def clean_note(text: str) -> str:
    """Plain text: control and format characters (but newlines) become spaces, runs of spaces one,
    ends stripped. Raises InvalidNote above MAX_NOTE_CHARS (counted after cleaning), or above
    MAX_NOTE_SENT_CHARS as sent."""
    if len(text) > MAX_NOTE_SENT_CHARS:
        raise InvalidNote(
            f"note is at most {MAX_NOTE_CHARS} characters (got {len(text)} as sent, "
            f"of which at most {MAX_NOTE_SENT_CHARS} are read)"
        )
    kept = "".join(c if c == "\n" or not unicodedata.category(c).startswith("C") else " " for c in text)
    note = "\n".join(" ".join(line.split()) for line in kept.splitlines()).strip()
    if len(note) > MAX_NOTE_CHARS:
        raise InvalidNote(f"note is at most {MAX_NOTE_CHARS} characters (got {len(note)})")
    return note


def note_sha256(note: str) -> str:
    """Part of the label cache key: "" for no note, so unnoted photos keep their cached answers."""
    return hashlib.sha256(note.encode()).hexdigest() if note else ""
