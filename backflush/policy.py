"""A flushing policy: the production parameters a history is replayed under (what-if).

A ``--policy`` file is read like an import file: every mistake is reported as
``FILE:LINE: field: reason`` with the line the field is really on, in plain words (no
pydantic internals), with a did-you-mean for a misspelled key or value, and duplicate keys
are refused (JSON parsers silently keep the last one).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from backflush.errors import BadInput

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Policy:
    """Validated production parameters (the fields of ``ProductionParametersSet``).

    ``params`` is the form the replay engine takes; ``source`` names where it came from and
    ``sha256`` identifies its bytes, so a report can say exactly which what-if it shows.
    """

    params: dict[str, Any] = field(repr=False)
    source: str = "<policy>"
    sha256: str = ""

    @classmethod
    def parse(cls, raw: bytes | str | dict[str, Any], source: str = "<policy>") -> Policy:
        """Validate a policy given as JSON text or a dict; raise `BadInput` naming the field.

        Each problem is one ``SOURCE:LINE: field: reason`` (all of them, in line order).
        """
        from backflush.ledger.codec import replay_policy
        from backflush.ledger.events import EventErrors, parse_policy

        if isinstance(raw, dict):
            import orjson

            try:  # quantities are Decimal in Python: written as the decimal strings a file has
                raw = orjson.dumps(raw, default=_decimal_text, option=orjson.OPT_INDENT_2)
            except TypeError as exc:  # (orjson.JSONEncodeError) a value no policy field takes
                raise BadInput(f"{source}: {exc}") from None
        data = raw.encode() if isinstance(raw, str) else raw
        problems = check_policy_text(data, source)
        if problems:
            raise BadInput(problems)
        try:
            params = replay_policy(parse_policy(data))
        except EventErrors as exc:  # a rule of the shared parser this check does not know
            raise BadInput([f"{source}:1: {e.field}: {_plain_reason(e.reason)}"
                            for e in exc.errors]) from None
        return cls(params=params, source=source, sha256=hashlib.sha256(data).hexdigest())

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Read and validate a ``--policy`` file."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BadInput(f"{path}: {exc.strerror}") from None
        return cls.parse(data, source=str(path))


def _decimal_text(v: Any) -> str:
    if isinstance(v, Decimal):
        return str(v)
    raise TypeError(f"Type is not JSON serializable: {type(v).__name__}")


# The fields of a ProductionParametersSet that are not parameters (the event's envelope and
# the position the ledger gave it).
_ENVELOPE = ("type", "at", "id", "seq")


def policy_of(recorded: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters of a recorded ProductionParametersSet (``Ledger.recorded_policy``) as a
    ``--policy`` object, JSON-ready (decimals as strings); None gives the defaults that hold
    when none was ever recorded. ``Policy.parse`` of it replays under exactly those
    parameters."""
    if recorded is None:
        recorded = {"default_input_location": "BACKFLUSH", "tolerance_pct": Decimal(0),
                    "rules": None}
    out = {k: v for k, v in recorded.items() if k not in _ENVELOPE}
    if out.get("rules") is not None:  # optional fields left out, as one would write them
        out["rules"] = [{k: v for k, v in r.items() if v is not None} for r in out["rules"]]
    for k, v in out.items():
        if isinstance(v, Decimal):
            out[k] = str(v)
    return out


# --- where each key is: a small scanner over JSON text already known to be valid -------------


class _Scanner:
    """Line of every key (and array element) of a JSON text, and its duplicate keys."""

    def __init__(self, text: str):
        self.t, self.i, self.line = text, 0, 1
        self.lines: dict[Path_, int] = {}
        self.duplicates: list[tuple[Path_, int, int]] = []  # (path, line, first line)

    def ws(self) -> None:
        t, n = self.t, len(self.t)
        while self.i < n and t[self.i] in " \t\r\n":
            if t[self.i] == "\n":
                self.line += 1
            self.i += 1

    def string(self) -> str:
        start = self.i
        self.i += 1
        t = self.t
        while t[self.i] != '"':
            self.i += 2 if t[self.i] == "\\" else 1
        self.i += 1
        return json.loads(t[start : self.i])

    def value(self, path: Path_) -> None:
        self.ws()
        c = self.t[self.i]
        self.lines.setdefault(path, self.line)
        if c == "{":
            self.obj(path)
        elif c == "[":
            self.arr(path)
        elif c == '"':
            self.string()
        else:
            while self.i < len(self.t) and self.t[self.i] not in ",]} \t\r\n":
                self.i += 1

    def obj(self, path: Path_) -> None:
        self.i += 1
        self.ws()
        if self.t[self.i] == "}":
            self.i += 1
            return
        seen: dict[str, int] = {}
        while True:
            self.ws()
            line = self.line
            key = self.string()
            p = (*path, key)
            if key in seen:
                self.duplicates.append((p, line, seen[key]))
            else:
                seen[key] = line
                self.lines[p] = line
            self.ws()
            self.i += 1  # ':'
            self.value(p)
            self.ws()
            c = self.t[self.i]
            self.i += 1
            if c == "}":
                return

    def arr(self, path: Path_) -> None:
        self.i += 1
        self.ws()
        if self.t[self.i] == "]":
            self.i += 1
            return
        k = 0
        while True:
            self.ws()
            self.lines[(*path, k)] = self.line
            self.value((*path, k))
            self.ws()
            c = self.t[self.i]
            self.i += 1
            if c == "]":
                return
            k += 1


def _field(path: Path_) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            name = p if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) else json.dumps(p)
            out += ("." if out else "") + name
    return out or "(policy)"


def _line(lines: dict[Path_, int], path: Path_) -> int:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 1)


def _did_you_mean(value: Any, choices: list[str]) -> str:
    if not isinstance(value, str):
        return ""
    low = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(low), 1, 0.6)
    return f"; did you mean {low[close[0]]!r}?" if close else ""


def _plain_reason(msg: str) -> str:
    """pydantic's "Input should be a valid string" → "must be a string"."""
    for old, new in (("Input should be a valid dictionary", "must be an object"),
                     ("Input should be a valid array", "must be a list"),
                     ("Input should be a valid list", "must be a list"),
                     ("Input should be an object", "must be an object"),
                     ("Input should be a valid ", "must be a "),
                     ("Input should be ", "must be ")):
        msg = msg.replace(old, new)
    return msg


# --- validation --------------------------------------------------------------------------------


def _model() -> Any:
    from pydantic import BaseModel, ConfigDict

    from backflush.ledger.events import FlushingRule, Name, Qty

    class PolicyFile(BaseModel):
        model_config = ConfigDict(extra="forbid")
        default_input_location: Name = "BACKFLUSH"
        tolerance_pct: Qty = Decimal(0)
        rules: list[FlushingRule] | None = None

    return PolicyFile


_UNION_TAG = re.compile(r"[\[\]'(),]|^(literal|list|function-|json-or-python|str|nullable)")


def _clean(loc: tuple[Any, ...]) -> Path_:
    """pydantic's location without the union members it tried (``literal['*']``...)."""
    return tuple(p for p in loc if isinstance(p, int) or not _UNION_TAG.search(str(p)))


def _fields_at(path: Path_) -> list[str]:
    from backflush.ledger.events import FlushingRule

    if len(path) == 2 and path[0] == "rules" and isinstance(path[1], int):
        return list(FlushingRule.model_fields)
    if not path:
        return list(_model().model_fields)
    return []


def _choices(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected)


def check_policy_text(data: bytes, source: str) -> list[str]:
    """Every problem of a policy file's bytes as ``SOURCE:LINE: field: reason`` (sorted)."""
    import orjson
    from pydantic import ValidationError

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return [f"{source}:{line}: (policy): not UTF-8 text"]
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return [f"{source}:{exc.lineno}: (policy): malformed JSON ({exc.msg}, column "
                f"{exc.colno})"]
    try:
        obj = json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        return [f"{source}:1: (policy): malformed JSON ({exc})"]
    if not isinstance(obj, dict):
        return [f"{source}:1: (policy): must be a JSON object with the fields of "
                "ProductionParametersSet (default_input_location, tolerance_pct, rules)"]
    scan = _Scanner(text)
    try:
        scan.value(())
    except (IndexError, RecursionError, ValueError):
        scan.lines = {}
    problems: list[tuple[int, str]] = [
        (line, f"{source}:{line}: {_field(p)}: duplicate key (first on line {first})")
        for p, line, first in scan.duplicates
    ]
    try:
        _model().model_validate(obj)
    except ValidationError as exc:
        problems.extend(_explain(exc, scan.lines, source))
    problems.sort(key=lambda x: x[0])
    return [p for _, p in problems]


def _explain(exc: Any, lines: dict[Path_, int], source: str) -> list[tuple[int, str]]:
    by_path: dict[Path_, list[dict[str, Any]]] = {}
    for err in exc.errors(include_url=False):
        by_path.setdefault(_clean(tuple(err["loc"])), []).append(err)
    out = []
    for path, all_errs in by_path.items():
        # A list or object given to a union field (``flush``): the list member's complaints
        # are at the items; the other members' ("must be 'always'") say nothing useful.
        errs = [e for e in all_errs
                if not (e["type"] == "literal_error" and isinstance(e.get("input"), list | dict))]
        if not errs:
            continue
        kinds = {e["type"] for e in errs}
        value = errs[0].get("input")
        if "extra_forbidden" in kinds:
            key = str(path[-1])
            reason = "unknown field" + _did_you_mean(key, _fields_at(path[:-1]))
        elif "missing" in kinds:
            reason = "required field is missing"
        elif "literal_error" in kinds:
            choices: list[str] = []
            for e in errs:
                if e["type"] == "literal_error":
                    choices += [c for c in _choices(e["ctx"]["expected"]) if c not in choices]
            if path and path[-1] == "flush" and "list_type" in kinds:
                reason = ('must be a list of principles or "always"'
                          + _did_you_mean(value, ["always"]))
            else:
                reason = (f"{json.dumps(value) if isinstance(value, str) else value} is not one"
                          f" of {', '.join(choices)}" + _did_you_mean(value, choices))
        else:
            e = errs[0]
            if e["type"] in ("greater_than_equal",) and e.get("ctx", {}).get("ge") == 0:
                reason = "must not be negative"
            elif e["type"] == "decimal_parsing" or e["type"] == "decimal_type":
                reason = "must be a decimal number"
            elif e["type"] == "string_pattern_mismatch":
                reason = "must not contain NUL characters"
            else:
                reason = _plain_reason(str(e["msg"]))
        line = _line(lines, path if "missing" not in kinds else path[:-1])
        out.append((line, f"{source}:{line}: {_field(path)}: {reason}"))
    return out
