"""The one set of date formats every ``--at``/``--known-at``/``--from``/``--to`` accepts.

Accepted (RFC 3339, plus two shorthands a planner types):

- ``2026-11-03T08:00:00Z``, ``2026-11-03T08:00:00.5+01:00``, ``2026-11-03 08:00Z``
  (``T`` or one space; seconds and a fraction of up to 6 digits optional);
- a time without offset, ``2026-11-03T08:00``, is UTC (events themselves must carry one);
- a bare date, ``2026-11-03``, is the whole day in UTC: its last microsecond
  (``23:59:59.999999Z``) for ``--at``, ``--known-at`` and ``--to``; its first
  (``00:00:00Z``) for ``--from``. So ``--at 2026-11-03`` and
  ``--at 2026-11-03T23:59:59.999999Z`` always give the same answer, and ``--from D --to D``
  covers exactly day D.

Nothing else: no basic format (``20261103``), no epoch numbers, no week dates, no fraction
beyond microseconds (it would be silently truncated), no ``24:00``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

# The accepted text, as a regular expression (``tests/test_dates.py`` holds ``_split`` to
# it; ``\d`` is any Unicode decimal digit, as ``str.isdecimal`` and ``int`` take them):
#   (?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})
#   (?:[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?
#   (?P<tz>[Zz]|[+-]\d{2}:\d{2})?)?
# Parsed by hand: ``re`` (which loads ``enum``) is ~5 ms of a query process's start.
GRAMMAR = (
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>[Zz]|[+-]\d{2}:\d{2})?)?"
)


def _digits(text: str, i: int, n: int) -> bool:
    """Whether ``text[i:i + n]`` is ``n`` decimal digits."""
    part = text[i:i + n]
    return len(part) == n and part.isdecimal()


def _split(text: str) -> dict[str, str | None] | None:
    """The fields of ``text`` by ``GRAMMAR`` (as ``re.fullmatch(GRAMMAR, text).groupdict()``),
    or None when it does not match."""
    if not (_digits(text, 0, 4) and text[4:5] == "-" and _digits(text, 5, 2)
            and text[7:8] == "-" and _digits(text, 8, 2)):
        return None
    m: dict[str, str | None] = {"y": text[0:4], "mo": text[5:7], "d": text[8:10], "h": None,
                                "mi": None, "s": None, "f": None, "tz": None}
    i, n = 10, len(text)
    if i == n:
        return m
    if text[i] not in "Tt " or not (_digits(text, i + 1, 2) and text[i + 3:i + 4] == ":"
                                     and _digits(text, i + 4, 2)):
        return None
    m["h"], m["mi"] = text[i + 1:i + 3], text[i + 4:i + 6]
    i += 6
    if text[i:i + 1] == ":" and _digits(text, i + 1, 2):
        m["s"] = text[i + 1:i + 3]
        i += 3
        if text[i:i + 1] == "." and _digits(text, i + 1, 1):
            j = i + 1
            while j < n and text[j].isdecimal():
                j += 1
            m["f"] = text[i + 1:j]
            i = j
    rest = text[i:]
    if rest in ("Z", "z"):
        m["tz"] = rest
    elif (len(rest) == 6 and rest[0] in "+-" and _digits(rest, 1, 2) and rest[3] == ":"
          and _digits(rest, 4, 2)):
        m["tz"] = rest
    elif rest:
        return None
    return m


FORMATS_HELP = (
    "RFC 3339 (2026-11-03T08:00:00Z, offset optional = UTC) or a bare date "
    "(2026-11-03 = that whole day, UTC)"
)


class DateError(ValueError):
    """A date option value outside the accepted formats; the message says why."""


def parse_instant(text: str, *, start_of_day: bool = False) -> datetime:
    """Parse one date option value into an aware datetime (see the module docstring).

    ``start_of_day`` selects the first microsecond of a bare date (``--from``) instead of
    its last. Raises `DateError` with a reason.
    """
    m = _split(text.strip())
    if m is None:
        raise DateError(f"not a date or RFC 3339 timestamp: {text!r} ({FORMATS_HELP})")
    try:
        day = date(int(m["y"]), int(m["mo"]), int(m["d"]))
    except ValueError as exc:
        raise DateError(f"{text!r}: {exc}") from None
    if m["h"] is None:
        t = time(0, 0) if start_of_day else time(23, 59, 59, 999999)
        return datetime.combine(day, t, tzinfo=UTC)
    frac = m["f"] or ""
    if len(frac) > 6:
        raise DateError(f"{text!r}: more than 6 fractional digits (microseconds at most)")
    try:
        t = time(int(m["h"]), int(m["mi"]), int(m["s"] or 0), int(frac.ljust(6, "0")))
    except ValueError as exc:
        raise DateError(f"{text!r}: {exc}") from None
    tz = m["tz"]
    if tz is None or tz in ("Z", "z"):
        tzinfo: timezone = UTC
    else:
        sign = 1 if tz[0] == "+" else -1
        hh, mm = int(tz[1:3]), int(tz[4:6])
        if hh > 23 or mm > 59:
            raise DateError(f"{text!r}: offset {tz} out of range")
        tzinfo = timezone(sign * timedelta(hours=hh, minutes=mm))
    return datetime.combine(day, t, tzinfo=tzinfo)
