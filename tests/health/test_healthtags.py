"""The health tag contract between Register and the registries (registry/healthtags.py)."""

from __future__ import annotations

import pytest

from registry.healthtags import (
    MAX_NOTE_BYTES,
    TAG_HEALTH,
    TAG_HEALTH_NOTE,
    Health,
    health_tags,
    parse_health,
    truncate_note,
    worst,
)


def test_worst_is_the_aggregate_and_no_checks_is_passing() -> None:
    assert worst([]) is Health.PASSING
    assert worst([Health.PASSING, Health.WARNING]) is Health.WARNING
    assert worst([Health.WARNING, Health.CRITICAL, Health.PASSING]) is Health.CRITICAL


@pytest.mark.parametrize("status", list(Health))
def test_tags_round_trip(status: Health) -> None:
    tags = health_tags(status, "db: connection refused")
    got, note, known = parse_health({"group": "g", **tags})
    assert (got, known) == (status, True)
    assert note == ("" if status is Health.PASSING else "db: connection refused")


def test_absent_and_unknown_words_read_as_passing_and_unknown_is_reported() -> None:
    assert parse_health({"group": "g"}) == (Health.PASSING, "", True)
    assert parse_health({TAG_HEALTH: "maintenance", TAG_HEALTH_NOTE: "x"}) == (Health.PASSING, "", False)


def test_from_word_names_the_accepted_words() -> None:
    assert Health.from_word("warning") is Health.WARNING
    with pytest.raises(ValueError, match="passing, warning or critical"):
        Health.from_word("down")


def test_long_notes_are_cut_on_a_character_boundary() -> None:
    note = "é" * 200  # 2 bytes each
    cut = truncate_note(note)
    assert len(cut.encode()) <= MAX_NOTE_BYTES and cut.endswith("...")
    assert cut[:-3] == "é" * len(cut[:-3])
    assert truncate_note("short") == "short"
    assert len(health_tags(Health.CRITICAL, "x" * 1000)[TAG_HEALTH_NOTE].encode()) <= MAX_NOTE_BYTES
