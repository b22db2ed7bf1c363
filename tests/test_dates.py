"""The date options' parser reads exactly the language of its regular expression.

``cli.dates`` parses by hand so that a query process never imports ``re`` (with ``enum``,
~5 ms of a 25 ms query). The expression stays the specification (``GRAMMAR``); these tests
hold the hand parser to it on texts built from the grammar's own pieces, mutated, and on
random text, Unicode digits included (``\\d`` takes any decimal digit, as ``int`` does).
"""

from __future__ import annotations

import re

import pytest
from backflush.cli.dates import GRAMMAR, DateError, _split, parse_instant
from fresh import reimported
from hypothesis import example, given, settings
from hypothesis import strategies as st

_RX = re.compile(GRAMMAR)

# Pieces a date text is made of, and near misses of each.
DIGIT = st.sampled_from(list("0123456789") + ["\u0663", "\uff15", "\u00b2", "a"])
PIECE = st.one_of(
    st.text(DIGIT, min_size=0, max_size=5),
    st.sampled_from(["-", ":", ".", "T", "t", " ", "Z", "z", "+", "-", "\t", "x", "+05:30",
                     "-00:00", "Z ", "2026-11-03", "T08:00", ":00", ".5", "08"]),
)


def _reference(text: str) -> dict | None:
    m = _RX.fullmatch(text)
    return None if m is None else m.groupdict()


@given(st.lists(PIECE, max_size=12).map("".join))
@settings(max_examples=3000)
@example("2026-11-03")
@example("2026-11-03T08:00")
@example("2026-11-03 08:00:00.123456+01:00")
@example("2026-11-03t08:00:00z")
@example("2026-11-03T08:00:5")
@example("2026-11-03T08:00:00.")
@example("2026-11-03T08:00:00.5")
@example("2026-11-03Z")
@example("\u0662\u0660\u0662\u0666-11-03")
def test_the_hand_parser_reads_the_grammars_language(text):
    assert _split(text) == _reference(text)


@given(st.text(max_size=40))
def test_on_any_text_as_well(text):
    assert _split(text) == _reference(text)


@pytest.mark.parametrize("text", ["2026-11-03T08:00:5", "2026-1-03", "20261103", "2026-11-03T"])
def test_a_near_miss_is_a_date_error(text):
    with pytest.raises(DateError):
        parse_instant(text)


def test_a_date_option_loads_no_regular_expressions():
    code = ("from backflush.cli.dates import parse_instant\n"
            "parse_instant('2026-11-03T08:00:00.5+02:00')")
    assert reimported(code, ("re", "enum")) == []
