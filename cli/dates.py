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

import re
from datetime import UTC, date, datetime, time, timedelta, timezone

_DATE = r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
_RX = re.compile(
    _DATE
    + r"(?:[Tt ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>[Zz]|[+-]\d{2}:\d{2})?)?"
)

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
    m = _RX.fullmatch(text.strip())
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
