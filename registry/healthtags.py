"""A service's health as it travels in its Serf tags: the contract between `Register` and the registries.

Why tags: every registry already receives every member's tags through gossip, so putting the aggregate
status of a service's checks there makes all registries agree without any new protocol, and a Go registry
in a mixed pool simply ignores the two extra tags (as Consul's catalog carries check status beside the
node). Serf caps a member's whole tag set at 512 bytes of metadata, so the note is short and cut on a
character boundary here, once, for every writer.

- ``health``: ``passing``, ``warning`` or ``critical``. Absent means passing (a service without checks, a
  Go service); an unknown word is read as passing too and reported by `parse_health` so the catalog can
  count it: a newer writer's status must not take a service out of every older registry's rings.
- ``health_note``: why (the failing check's name and output), at most `MAX_NOTE_BYTES` of UTF-8.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Literal

__all__ = [
    "MAX_NOTE_BYTES",
    "TAG_HEALTH",
    "TAG_HEALTH_NOTE",
    "Health",
    "HealthWord",
    "health_tags",
    "parse_health",
    "truncate_note",
    "worst",
]

TAG_HEALTH = "health"
TAG_HEALTH_NOTE = "health_note"
#: A note longer than this is cut (on a character boundary) before it is put in the tags.
MAX_NOTE_BYTES = 96

HealthWord = Literal["passing", "warning", "critical"]


class Health(enum.IntEnum):
    """Check status, ordered so that the worst of several is their `max` (Consul's aggregate rule)."""

    PASSING = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def word(self) -> HealthWord:
        """The tag and API spelling (``"passing"`` ...)."""
        return _WORDS[self]

    @classmethod
    def from_word(cls, word: str) -> Health:
        """The status a word names; `ValueError` naming the accepted words for anything else."""
        try:
            return _BY_WORD[word]
        except KeyError:
            raise ValueError(f"unknown health status {word!r} (expected passing, warning or critical)") from None


_WORDS: dict[Health, HealthWord] = {Health.PASSING: "passing", Health.WARNING: "warning", Health.CRITICAL: "critical"}
_BY_WORD: dict[str, Health] = {w: h for h, w in _WORDS.items()}


def worst(statuses: list[Health]) -> Health:
    """The aggregate of a service's checks: the worst one; passing when it has none."""
    return max(statuses, default=Health.PASSING)


def truncate_note(note: str, limit: int = MAX_NOTE_BYTES) -> str:
    """`note` cut to at most `limit` UTF-8 bytes without splitting a character ("..." marks a cut)."""
    raw = note.encode("utf-8", "replace")
    if len(raw) <= limit:
        return note
    return raw[: max(0, limit - 3)].decode("utf-8", "ignore") + "..."


def health_tags(status: Health, note: str = "") -> dict[str, str]:
    """The tags that publish `status` (passing publishes no note: nothing to explain)."""
    if status is Health.PASSING:
        return {TAG_HEALTH: "passing"}
    return {TAG_HEALTH: status.word, TAG_HEALTH_NOTE: truncate_note(note)}


def parse_health(tags: Mapping[str, str]) -> tuple[Health, str, bool]:
    """(status, note, known) read from a member's tags; absent or unknown words read as passing,
    with ``known`` False for an unknown word (the caller counts it)."""
    word = tags.get(TAG_HEALTH)
    if word is None:
        return Health.PASSING, "", True
    found = _BY_WORD.get(word)
    if found is None:
        return Health.PASSING, "", False
    return found, tags.get(TAG_HEALTH_NOTE, "") if found is not Health.PASSING else "", True
