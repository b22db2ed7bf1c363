"""A flushing policy: the production parameters a history is replayed under (what-if)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backflush.errors import BadInput


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
        """Validate a policy given as JSON text or a dict; raise `BadInput` naming the field."""
        import hashlib

        from backflush.ledger.codec import replay_policy
        from backflush.ledger.events import EventErrors, parse_policy

        if isinstance(raw, dict):
            import orjson

            raw = orjson.dumps(raw)
        data = raw.encode() if isinstance(raw, str) else raw
        try:
            params = replay_policy(parse_policy(data))
        except EventErrors as exc:
            raise BadInput([f"{source}:1: {e.field}: {e.reason}" for e in exc.errors]) from None
        return cls(params=params, source=source, sha256=hashlib.sha256(data).hexdigest())

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Read and validate a ``--policy`` file."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BadInput(f"{path}: {exc.strerror}") from None
        return cls.parse(data, source=str(path))
