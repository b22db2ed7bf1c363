"""Plant-scale benchmark of issue 7: one run, SQLite and PostgreSQL, whole CLI processes.

Run (writes ``bench/out/report.json`` and ``bench/out/report.md``)::

    .venv/bin/python bench/plant.py --events 1000000 --pg postgresql://postgres@HOST:PORT/backflush

Everything the ledger does is measured through the ``backflush`` command as a whole process
(import, rebuild, onhand/wip/consumption/findings --order as of a time, events, export,
findings, hours, --version), because the importer, the projections and the CLI change
under it; the baselines are written here, on the same file, in the same run:

- raw insert: ``sqlite3`` ``executemany`` of the file's lines into one table (one
  transaction), and on PostgreSQL a ``COPY`` of the lines into one table;
- raw read-back: ``SELECT state FROM <the table holding the stored payloads>`` (found in the
  ledger's schema) plus ``orjson.loads`` of every row;
- ``python -c pass`` of the interpreter the ``backflush`` script runs on;
- storage floor: the very rows the import stored in the event tables (``EVENT_TABLES``),
  read back from the imported ledger beforehand (not timed) and written into an empty
  copy of the ledger's own tables as the bulk import writes them (SQLite: rollback journal,
  indexes that back no constraint built after the rows, one transaction; PostgreSQL: binary
  ``COPY``, the same index builds): what the database alone costs for the stored layout,
  whatever the Python before it. An import cannot be faster than this.

The history comes from ``backflush simulate --orders N --seed S`` (faults ``scrap`` and
``late`` by default), cut at the target event count. Of the events in the last 24 hours of
that cut, a few ``OperationReported`` are held back, so the ledger misses them; the
late-import file is those events (2% of it) plus the events ``simulate`` sends next (new
events of the running and of new orders): a scanner that syncs late while the plant goes on.

Repeated measures are interleaved (raw, ledger, raw, ledger, ...) and reported as medians.
Peak RSS is the child's own ``ru_maxrss`` (``os.wait4``); time to first byte is read on the
command's stdout pipe. The ingest phase alone is the time spent inside
``backflush.ledger.importer.run_import`` of the same ``import`` process (timed by a
five-line wrapper around the console entry point; "n/a" if that function is gone).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

OUT = Path(__file__).resolve().parent / "out"
REPO = Path(__file__).resolve().parent.parent
HOUR_US = 3_600_000_000
LATE_WINDOW_US = 24 * HOUR_US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIMEOUT = [3600.0]  # seconds per command (--timeout); a list so main() can set it

# Runs the console entry point with ``run_import`` timed, so one ``import`` process gives both
# the whole-process time and the ingest phase alone. Patched before the CLI is imported, so a
# ``from ... import run_import`` anywhere in the CLI picks up the timed one.
IMPORT_WRAPPER = """\
import os, sys, time
try:
    import backflush.ledger.importer as _m
    _orig = _m.run_import
    def _timed(*a, **k):
        t = time.perf_counter()
        r = _orig(*a, **k)
        with open(os.environ["BENCH_INGEST_OUT"], "a") as fh:
            fh.write(f"{time.perf_counter() - t!r}\\n")
        return r
    _m.run_import = _timed
except Exception:
    pass
import importlib
_mod, _fn = os.environ["BENCH_ENTRY"].split(":")
sys.argv[0] = "backflush"
sys.exit(getattr(importlib.import_module(_mod), _fn)())
"""


# --- processes -------------------------------------------------------------------------


@dataclass
class Proc:
    """One finished child process: wall time, peak RSS, time to first stdout byte, CPU."""

    argv: list[str]
    wall: float
    rss_mb: float
    rc: int
    ttfb: float | None
    out_bytes: int
    head: bytes
    err: str
    cpu: float = 0.0  # user + system seconds of the process and the children it waited for
    err_lines: int = 0  # lines of stderr (``err`` keeps its last 2,000 characters only)


COMPILE_PACKAGE = """
import compileall, importlib, os
for name in ("backflush", "backflush.cli", "backflush.ledger", "backflush.projections"):
    compileall.compile_dir(os.path.dirname(importlib.import_module(name).__file__), quiet=1)
"""


def spawn(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Proc:
    """Run ``argv`` to completion, reading its stdout through a pipe.

    ``os.wait4`` gives this child's resource usage (Linux: its own and that of the
    children it waited for, such as a worker process): its peak RSS is the largest of
    theirs, not a sum, so commands can be compared one by one; its CPU time is their sum,
    what the command cost the machine.
    """
    with tempfile.TemporaryFile() as errf:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL, cwd=cwd,
            env=env,
        )
        assert p.stdout is not None
        # A hung command (a lock that never comes) must not hang an hour-long run.
        watchdog = threading.Timer(TIMEOUT[0], p.kill)
        watchdog.daemon = True
        watchdog.start()
        fd = p.stdout.fileno()
        ttfb: float | None = None
        n = 0
        head = bytearray()
        while chunk := os.read(fd, 1 << 16):
            if ttfb is None:
                ttfb = time.perf_counter() - t0
            n += len(chunk)
            if len(head) < 1 << 16:
                head += chunk[: (1 << 16) - len(head)]
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        watchdog.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stdout.close()
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = ru.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return Proc(argv, wall, rss, p.returncode, ttfb, n, bytes(head), err[-2000:],
                ru.ru_utime + ru.ru_stime, err_lines=err.count("\n"))


def median(xs: list[float]) -> float | None:
    """Median, or None for no samples."""
    return statistics.median(xs) if xs else None


# --- the history ---------------------------------------------------------------------------


def parse_at(text: str) -> int:
    """Microseconds since the epoch of an ISO 8601 timestamp with offset."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (dt - _EPOCH) // timedelta(microseconds=1)


def iso(us: int) -> str:
    """ISO 8601 (UTC, ``Z``) of microseconds since the epoch."""
    return (_EPOCH + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


# The what-if policy of the ``--policy`` replays: seed 001's fix (examples/001-terminals-and-
# scanner/fix-policy.json).
BENCH_POLICY = Path(__file__).resolve().parents[1] / "examples" / "001-terminals-and-scanner" \
    / "fix-policy.json"


def _others(policy: str, end: list[str], order: str, item: str
            ) -> list[tuple[str, list[str]]]:
    """(name, argv) of each command ``others_phase`` runs, the name being how the report
    shows it."""
    return [
        ("verify", ["verify"]),
        ("verify --deep", ["verify", "--deep"]),
        ("anchor", ["anchor"]),
        ("audit O", ["audit", order]),
        ("moves --item I", ["moves", "--item", item, "--json"]),
        # The widest output: every payload field a column (125 at 1M events); it took 90 s.
        ("events --csv --at END", ["events", *end, "--csv"]),
        ("onhand --policy P --at END", ["onhand", "--policy", policy, *end, "--json"]),
        ("wip --policy P --at END", ["wip", "--policy", policy, *end, "--json"]),
        ("findings --policy P --at END", ["findings", "--policy", policy, *end, "--json"]),
        ("hours --policy P --at END", ["hours", "--policy", policy, *end, "--json"]),
    ]


@dataclass
class Tier:
    """One ledger size: its file, its event count, query times and orders."""

    name: str
    path: Path
    events: int
    times: list[str]
    orders: list[str]
    last_at: str


@dataclass
class History:
    """The files of one run: big ledger, small ledger, late-import tail."""

    big: Tier
    small: Tier
    tail: Path
    tail_events: int
    tail_late: int
    held_back: int
    max_late_h: float
    shift_h: float
    simulate_cmd: list[str]
    simulate_s: float
    tail_last_at: str


def count_lines(path: Path) -> int:
    """Lines in a file (bytes count of newlines)."""
    with open(path, "rb") as fh:
        return sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 20), b""))


def spread(xs: list[Any], k: int) -> list[Any]:
    """``k`` items spread evenly over ``xs`` (first and last included), deterministic."""
    if not xs or k <= 0:
        return []
    if k == 1 or len(xs) == 1:
        return [xs[len(xs) // 2]]
    return [xs[round(i * (len(xs) - 1) / (k - 1))] for i in range(k)]


def make_history(args: argparse.Namespace, bf: list[str], work: Path) -> History:
    """Simulate, cut at ``--events``, hold back late events, write big/small/tail files."""
    faults = [a for f in args.faults.split(",") if f for a in ("--fault", f)]
    need = args.events + args.late_events + 200
    # Calibrate the events per order on small runs of the same seed and faults: 0 orders
    # gives the master data alone.
    cal = work / "calibrate.jsonl"
    sizes = []
    for k in (0, 200):
        check(spawn(bf + ["simulate", "--orders", str(k), "--seed", str(args.seed)] + faults
                    + ["-o", str(cal)], cwd=work), "simulate (calibration)")
        sizes.append(count_lines(cal))
    cal.unlink()
    per_order = max(1.0, (sizes[1] - sizes[0]) / 200)
    orders = math.ceil(need / per_order * 1.05) + 10
    full = work / "simulated.jsonl"
    while True:
        cmd = bf + ["simulate", "--orders", str(orders), "--seed", str(args.seed)] + faults
        sim = spawn(cmd + ["-o", str(full)], cwd=work)
        check(sim, "simulate")
        if count_lines(full) >= need:
            break
        orders = math.ceil(orders * 1.2) + 10
    n_big = args.events
    n_small = args.small if args.small < n_big else max(1, n_big // 2)
    n_late = round(args.late_events * args.late_share)

    # Pass 1: the big cut's time span, its orders, and OperationReported candidates.
    max_at = 0
    min_at = None
    orders_big: list[tuple[int, str]] = []
    reported: list[tuple[int, int]] = []  # (at_us, line index)
    small_max = small_min = None
    with open(full, "rb") as fh:
        for i, line in enumerate(fh):
            if i >= n_big:
                break
            ev = orjson.loads(line)
            at = parse_at(ev["at"])
            max_at = max(max_at, at)
            min_at = at if min_at is None else min(min_at, at)
            if i < n_small:
                small_max = at if small_max is None else max(small_max, at)
                small_min = at if small_min is None else min(small_min, at)
            if ev["type"] == "OrderCreated":
                orders_big.append((i, ev["order"]))
            elif ev["type"] == "OperationReported":
                reported.append((at, i))
    cands = sorted((at, i) for at, i in reported if max_at - LATE_WINDOW_US <= at < max_at)
    # Spread over the window, oldest included: the earliest late event sets the replay cost.
    held = spread(cands, n_late) if len(cands) > n_late else cands
    held_idx = {i for _, i in held}

    big = work / "big.jsonl"
    small = work / "small.jsonl"
    tail = work / "tail.jsonl"
    held_lines: list[bytes] = []
    new_lines: list[bytes] = []
    with (open(full, "rb") as fh, open(big, "wb") as fb, open(small, "wb") as fs):
        written = 0
        for i, line in enumerate(fh):
            if i < n_big:
                if i in held_idx:
                    held_lines.append(line)
                    continue
                fb.write(line)
                if written < n_small:
                    fs.write(line)
                written += 1
            elif len(new_lines) < args.late_events - len(held_lines):
                new_lines.append(line)
            else:
                break
    # simulate sends order by order, and orders overlap in time, so the events it sends next
    # partly happened before the ledger's last event. Shift them, as one block, to start after
    # it: within the block nothing moves relative to anything else, and every event only
    # moves later than the events of its order already in the ledger. So the tail's late
    # events are exactly the held-back ones.
    new_evs = [orjson.loads(x) for x in new_lines]
    first_new = min((parse_at(e["at"]) for e in new_evs), default=max_at)
    shift = max(0, max_at + 60_000_000 - first_new) // 60_000_000 * 60_000_000
    if shift:
        for e in new_evs:
            e["at"] = iso(parse_at(e["at"]) + shift)
        new_lines = [orjson.dumps(e) + b"\n" for e in new_evs]
    # The held-back events go in evenly among the new ones, as a scanner's sync would.
    tail_lines = list(new_lines)
    step = max(1, len(tail_lines) // max(1, len(held_lines)))
    for k, line in enumerate(held_lines):
        tail_lines.insert(min(len(tail_lines), k * (step + 1)), line)
    tail.write_bytes(b"".join(tail_lines))
    late_ats = [parse_at(orjson.loads(x)["at"]) for x in tail_lines]
    late = [a for a in late_ats if a < max_at]
    max_late_h = max((max_at - a) / HOUR_US for a in late) if late else 0.0

    def tier(name: str, path: Path, n: int, lo: int, hi: int, cut: int) -> Tier:
        k = args.query_reps
        times = [iso(lo + (hi - lo) * (j + 1) // (k + 1)) for j in range(k)]
        ords = spread([o for i, o in orders_big if i < cut], k)
        return Tier(name, path, n, times, ords, iso(hi))

    return History(
        big=tier("big", big, n_big - len(held_lines), min_at or 0, max_at, n_big),
        small=tier("small", small, n_small, small_min or 0, small_max or 0, n_small),
        tail=tail,
        tail_events=len(tail_lines),
        tail_late=len(late),
        held_back=len(held_lines),
        max_late_h=round(max_late_h, 3),
        shift_h=round(shift / HOUR_US, 3),
        simulate_cmd=["backflush"] + cmd[len(bf):] + ["-o", full.name],
        simulate_s=sim.wall,
        tail_last_at=iso(max(late_ats)) if late_ats else iso(max_at),
    )


class BenchError(Exception):
    """A command the bench needs failed; the message says which and why."""


def check(p: Proc, what: str) -> Proc:
    """Raise ``BenchError`` unless the process exited 0."""
    if p.rc != 0:
        if p.rc == -9:
            what += f" (killed after --timeout {TIMEOUT[0]:g} s?)"
        argv = ["<import wrapper>" if a == IMPORT_WRAPPER else a for a in p.argv]
        raise BenchError(f"{what}: exit {p.rc}: {' '.join(argv)}\n{p.err.strip()}")
    return p


# --- backends ------------------------------------------------------------------------------


class Backend:
    """Where ledgers live and how the raw baselines write and read on that database."""

    name = ""
    raw_insert_label = ""

    def fresh(self, role: str) -> str:
        """URL/path of an empty ledger for ``role`` (anything left there is dropped)."""
        raise NotImplementedError

    def clone(self, src: str, role: str) -> str:
        """A copy of ledger ``src`` under ``role``."""
        raise NotImplementedError

    def drop(self, role: str) -> None:
        """Remove the ledger of ``role``."""
        raise NotImplementedError

    def raw_insert(self, path: Path) -> float:
        """Seconds to bulk-load the file's lines into one table (the baseline)."""
        raise NotImplementedError

    def raw_read(self, url: str) -> tuple[float, int, str]:
        """Seconds to read back every stored payload and ``orjson.loads`` it; rows; table."""
        raise NotImplementedError

    where = ""  # what a child process needs to make this backend again (``floor``)

    def floor(self, url: str, which: str = "events") -> float:
        """Seconds to write the rows of ``EVENT_TABLES`` of ledger ``url`` into an empty copy
        of its tables, as a bulk import does (the rows are read before the clock runs);
        ``which="projections"``: the projections' tables, as a rebuild writes them.

        Measured in a process of its own: the rows it holds would grow this one, and a
        child's ``ru_maxrss`` starts from its parent's (it survives fork and exec), so every
        later command's peak RSS would read as this process's."""
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), FLOOR_CHILD,
                            self.name, self.where, url, which],
                           capture_output=True, text=True, timeout=TIMEOUT[0])
        if p.returncode != 0:
            raise BenchError("floor: " + (p.stderr.strip() or p.stdout.strip())[-2000:])
        return float(p.stdout.split()[-1])

    def floor_here(self, url: str, which: str = "events") -> float:
        """``floor`` in this process."""
        raise NotImplementedError

    def close(self, keep: bool) -> None:
        """Drop what the bench created unless ``keep``."""


FLOOR_CHILD = "--floor-child"  # plant.py FLOOR_CHILD BACKEND WHERE URL: print floor seconds
# The tables an import writes (the projections are written after its ingest phase); of the
# other bf_* tables, those a rebuild does not write: the rest are the projections'.
EVENT_TABLES = ("bf_events", "bf_chain")
NOT_PROJECTIONS = ("bf_lock", "bf_verify")
FLOOR_CHUNK = 50_000  # rows read (untimed) and written (timed) at a time


def _decode_all(rows: Iterator[Any]) -> int:
    n = 0
    loads = orjson.loads
    for (state,) in rows:
        if isinstance(state, (bytes, str)):
            loads(state)
        elif isinstance(state, memoryview):
            loads(bytes(state))
        n += 1
    return n


class SQLiteBackend(Backend):
    """Ledgers as files in the work directory."""

    name = "sqlite"
    raw_insert_label = "sqlite3 executemany"

    def __init__(self, work: Path):
        self.where = str(work)
        self.dir = work / "sqlite"
        self.dir.mkdir(exist_ok=True)

    def _path(self, role: str) -> Path:
        return self.dir / f"{role}.db"

    def drop(self, role: str) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(self._path(role)) + suffix).unlink(missing_ok=True)

    def fresh(self, role: str) -> str:
        self.drop(role)
        return str(self._path(role))

    def clone(self, src: str, role: str) -> str:
        self.drop(role)
        for suffix in ("", "-wal", "-shm"):
            s = Path(src + suffix)
            if s.exists():
                shutil.copyfile(s, str(self._path(role)) + suffix)
        return str(self._path(role))

    def raw_insert(self, path: Path) -> float:
        db = self._path("raw")
        self.drop("raw")
        t = time.perf_counter()
        con = sqlite3.connect(db)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE raw_events (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        with open(path, "rb") as fh:
            con.executemany("INSERT INTO raw_events (payload) VALUES (?)", ((x,) for x in fh))
        con.commit()
        con.close()
        dt = time.perf_counter() - t
        self.drop("raw")
        return dt

    def payload_table(self, con: sqlite3.Connection) -> tuple[str, str]:
        """(table, column) holding the stored payloads.

        The table with a ``state`` or ``payload`` column and the most rows (``stored_events``
        on a tie): the store may move its payloads to a table of its own, and leave an empty
        ``stored_events`` behind.
        """
        found = []
        for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cols = {r[1] for r in con.execute(f'PRAGMA table_info("{t}")')}
            for c in ("state", "payload"):
                if c in cols:
                    n = con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                    found.append((-n, t != "stored_events", t, c))
                    break
        if not found:
            raise BenchError("no table with a state/payload column in the ledger")
        _, _, t, c = min(found)
        return t, c

    def raw_read(self, url: str) -> tuple[float, int, str]:
        con = sqlite3.connect(url)
        t_name, col = self.payload_table(con)
        con.close()
        t = time.perf_counter()
        con = sqlite3.connect(url)
        n = _decode_all(con.execute(f'SELECT "{col}" FROM "{t_name}"'))
        con.close()
        return time.perf_counter() - t, n, f"{t_name}.{col}"

    def floor_here(self, url: str, which: str = "events") -> float:
        try:
            return self._floor(url, which)
        finally:
            self.drop("floor")

    def _floor(self, url: str, which: str = "events") -> float:
        src = sqlite3.connect(url)
        if which == "events":
            tables = list(EVENT_TABLES)
        else:
            tables = [t for (t,) in src.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'bf\\_%'"
                " ESCAPE '\\' ORDER BY rowid") if t not in EVENT_TABLES + NOT_PROJECTIONS]
        marks = ",".join("?" * len(tables))
        schema = src.execute(
            "SELECT type, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            f" AND tbl_name IN ({marks}) ORDER BY rowid", tables).fetchall()
        if {t for k, t, _ in schema if k == "table"} != set(tables) or not tables:
            raise BenchError(f"the ledger has not all of {tables}")
        self.drop("floor")
        con = sqlite3.connect(self._path("floor"), isolation_level=None)
        # An import's first bulk load: rollback journal, indexes built after the rows; a
        # rebuild: WAL, the indexes in place (SQLite cannot drop a WITHOUT ROWID table's).
        con.execute("PRAGMA journal_mode=" + ("DELETE" if which == "events" else "WAL"))
        for kind, _t, sql in schema:
            if kind == "table" or (kind == "index" and which != "events"):
                con.execute(sql)
        dt = 0.0
        t = time.perf_counter()
        con.execute("BEGIN")
        dt += time.perf_counter() - t
        for table in tables:
            cols = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")')]
            sql = f'INSERT INTO "{table}" VALUES ({",".join("?" * len(cols))})'
            cur = src.execute(f'SELECT * FROM "{table}"')  # (key order: b-trees' best case)
            while rows := cur.fetchmany(FLOOR_CHUNK):
                t = time.perf_counter()
                con.executemany(sql, rows)
                dt += time.perf_counter() - t
        t = time.perf_counter()
        for kind, _t, sql in schema:
            if kind == "index" and which == "events":  # (a constraint's index has no SQL)
                con.execute(sql)
        con.execute("COMMIT")
        dt += time.perf_counter() - t
        for table in tables:
            a, b = (c.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] for c in (src, con))
            if a != b:
                raise BenchError(f"floor: {b} rows of {table} written, the ledger has {a}")
        con.close()
        src.close()
        return dt


class PostgresBackend(Backend):
    """Ledgers as databases created on the server of ``--pg`` (dropped at the end)."""

    name = "postgres"
    raw_insert_label = "COPY"

    def __init__(self, url: str):
        import psycopg

        self.psycopg = psycopg
        self.url = self.where = url
        self.prefix = f"bfbench_{os.getpid()}_"
        self.made: set[str] = set()

    def _url(self, db: str) -> str:
        return urlunsplit(urlsplit(self.url)._replace(path="/" + db))

    def _admin(self, sql: str) -> None:
        with self.psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def drop(self, role: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.prefix}{role}" WITH (FORCE)')
        self.made.discard(role)

    def fresh(self, role: str) -> str:
        self.drop(role)
        self._admin(f'CREATE DATABASE "{self.prefix}{role}"')
        self.made.add(role)
        return self._url(self.prefix + role)

    def clone(self, src: str, role: str) -> str:
        self.drop(role)
        src_db = urlsplit(src).path.lstrip("/")
        for attempt in range(20):
            # A template must have no sessions: a command that just exited may still be
            # leaving the server for a moment.
            try:
                self._admin(f'CREATE DATABASE "{self.prefix}{role}" TEMPLATE "{src_db}"')
                break
            except self.psycopg.errors.ObjectInUse:
                if attempt == 19:
                    raise
                time.sleep(0.25)
        self.made.add(role)
        return self._url(self.prefix + role)

    def raw_insert(self, path: Path) -> float:
        url = self.fresh("raw")
        t = time.perf_counter()
        with self.psycopg.connect(url) as conn:
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE raw_events (payload BYTEA NOT NULL)")
                with (cur.copy("COPY raw_events (payload) FROM STDIN") as cp,
                      open(path, "rb") as fh):
                    for line in fh:
                        cp.write_row((line,))
            conn.commit()
        dt = time.perf_counter() - t
        self.drop("raw")
        return dt

    def raw_read(self, url: str) -> tuple[float, int, str]:
        with self.psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT c.table_schema, c.table_name, c.column_name"
                " FROM information_schema.columns c JOIN information_schema.tables t"
                " USING (table_schema, table_name)"
                " WHERE c.column_name IN ('state', 'payload') AND t.table_type = 'BASE TABLE'"
                " AND c.table_schema NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
            found = []
            for schema, table, col in rows:
                n = conn.execute(f'SELECT COUNT(*) FROM "{schema}"."{table}"').fetchone()[0]
                found.append((-n, table != "stored_events", schema, table, col))
        if not found:
            raise BenchError("no table with a state/payload column in the ledger")
        _, _, schema, table, col = min(found)
        t = time.perf_counter()
        with self.psycopg.connect(url) as conn, conn.cursor(name="bench_read") as cur:
            cur.itersize = 10_000
            cur.execute(f'SELECT "{col}" FROM "{schema}"."{table}"')
            n = _decode_all(cur)
        return time.perf_counter() - t, n, f"{table}.{col}"

    def floor_here(self, url: str, which: str = "events") -> float:
        if which != "events":  # (its rebuild met its target: only SQLite's is asked)
            raise BenchError("the projections' storage floor is measured on SQLite only")
        try:
            return self._floor(url)
        finally:
            self.drop("floor")

    def _floor(self, url: str) -> float:
        # The same schema: a copy of the ledger (CREATE DATABASE ... TEMPLATE), emptied.
        dst = self.clone(url, "floor")
        types = {"bigint": "int8", "integer": "int4", "text": "text", "bytea": "bytea",
                 "smallint": "int2", "boolean": "bool"}
        dt = 0.0
        with self.psycopg.connect(url) as src, self.psycopg.connect(dst) as conn:
            conn.execute("TRUNCATE " + ", ".join(EVENT_TABLES))
            conn.commit()
            t = time.perf_counter()
            indexes = conn.execute(
                "SELECT c.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x"
                " JOIN pg_class c ON c.oid = x.indexrelid"
                " WHERE x.indrelid::regclass::text = ANY(%s) AND NOT EXISTS"
                " (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)",
                (list(EVENT_TABLES),)).fetchall()
            for name, _sql in indexes:
                conn.execute(f'DROP INDEX "{name}"')
            dt += time.perf_counter() - t
            for table in EVENT_TABLES:
                cols = src.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
                names = ", ".join(c for c, _ in cols)
                with src.cursor(name=f"floor_{table}") as rd:
                    rd.itersize = FLOOR_CHUNK
                    rd.execute(f"SELECT {names} FROM {table} ORDER BY 1")
                    while rows := rd.fetchmany(FLOOR_CHUNK):
                        t = time.perf_counter()
                        with conn.cursor().copy(
                                f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as cp:
                            cp.set_types([types[d] for _, d in cols])
                            for r in rows:
                                cp.write_row(r)
                        dt += time.perf_counter() - t
            t = time.perf_counter()
            if indexes:
                conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            for _name, sql in indexes:
                conn.execute(sql)
            conn.commit()
            dt += time.perf_counter() - t
            for table in EVENT_TABLES:
                a, b = (c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                        for c in (src, conn))
                if a != b:
                    raise BenchError(f"floor: {b} rows of {table} written, the ledger has {a}")
        return dt

    def close(self, keep: bool) -> None:
        if not keep:
            for role in list(self.made):
                self.drop(role)


# --- the measurements ---------------------------------------------------------------------


@dataclass
class Samples:
    """Named lists of samples (seconds, MB) of one backend, plus notes."""

    t: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, list[float]] = field(default_factory=dict)
    ttfb: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, p: Proc | float, *, ttfb: bool = False) -> None:
        """Record a process (wall, RSS, optionally first byte) or a plain time."""
        if isinstance(p, Proc):
            self.t.setdefault(key, []).append(p.wall)
            self.rss.setdefault(key, []).append(p.rss_mb)
            self.cpu.setdefault(key, []).append(p.cpu)
            if ttfb:
                self.ttfb.setdefault(key, []).append(p.ttfb if p.ttfb is not None else p.wall)
        else:
            self.t.setdefault(key, []).append(p)


class Bench:
    """One backend's measurements on the shared history."""

    def __init__(self, args: argparse.Namespace, hist: History, backend: Backend,
                 bf: list[str], py: str, entry: str, work: Path, log: Callable[[str], None]):
        self.args = args
        self.h = hist
        self.b = backend
        self.bf = bf
        self.py = py
        self.entry = entry
        self.work = work
        self.log = log
        self.s = Samples()
        self.errors: list[str] = []

    def cli(self, url: str, *argv: str) -> Proc:
        return spawn(self.bf + ["--db", url, *argv], cwd=self.work)

    def cli_import(self, url: str, path: Path) -> tuple[Proc, float | None]:
        """``backflush --db URL import FILE`` with the ingest phase timed inside it."""
        marker = self.work / "ingest.txt"
        marker.unlink(missing_ok=True)
        env = dict(os.environ, BENCH_INGEST_OUT=str(marker), BENCH_ENTRY=self.entry)
        p = spawn([self.py, "-P", "-c", IMPORT_WRAPPER, "--db", url, "import", str(path)],
                  cwd=self.work, env=env)
        check(p, f"import {path.name}")
        ingest = None
        if marker.exists():
            ingest = sum(float(x) for x in marker.read_text().split())
        return p, ingest

    def import_phase(self) -> str:
        """Raw insert and ``import`` + first query, interleaved; leaves the big ledger."""
        s, h = self.s, self.h
        url = ""
        for r in range(self.args.reps):
            self.log(f"[{self.b.name}] import rep {r + 1}/{self.args.reps}")
            s.add("raw_insert", self.b.raw_insert(h.big.path))
            url = self.b.fresh("big")
            p, ingest = self.cli_import(url, h.big.path)
            s.add("import", p)
            if ingest is not None:
                s.add("ingest", ingest)
            s.info["import_stdout"] = p.head.decode("utf-8", "replace").strip()[-200:]
            q = check(self.cli(url, "onhand", "--at", h.big.last_at, "--json"), "first query")
            s.add("first_query", q)
        return url

    def floor_phase(self, url: str) -> None:
        """The storage floor of the big ledger's rows (``Backend.floor``)."""
        for r in range(self.args.reps):
            self.log(f"[{self.b.name}] storage floor rep {r + 1}/{self.args.reps}")
            self.s.add("floor", self.b.floor(url))

    def rebuild_phase(self, url: str) -> None:
        """Raw read-back + decode and ``rebuild``, interleaved."""
        for r in range(self.args.reps):
            self.log(f"[{self.b.name}] rebuild rep {r + 1}/{self.args.reps}")
            dt, n, table = self.b.raw_read(url)
            self.s.add("raw_read", dt)
            self.s.info["raw_read_rows"] = n
            self.s.info["payload_table"] = table
            self.s.add("rebuild", check(self.cli(url, "rebuild"), "rebuild"))
        if self.b.name == "sqlite":
            for r in range(self.args.reps):
                self.log(f"[{self.b.name}] projections' storage floor rep {r + 1}/{self.args.reps}")
                self.s.add("floor_projections", self.b.floor(url, "projections"))

    def query_phase(self, tier: Tier, url: str) -> None:
        """Whole-process queries, ``--version`` and ``python -c pass``, interleaved."""
        k = self.args.query_reps
        per_rep = max(1, math.ceil(self.args.pass_reps / k))
        for r in range(k):
            self.log(f"[{self.b.name}] queries {tier.name} rep {r + 1}/{k}")
            at, order = tier.times[r % len(tier.times)], tier.orders[r % len(tier.orders)]
            bf, py, db = self.bf, [self.py], ["--db", url]
            runs: list[tuple[str, list[str]]] = [
                ("version", bf + ["--version"]),
                ("onhand", bf + db + ["onhand", "--at", at, "--json"]),
                ("wip", bf + db + ["wip", "--at", at, "--json"]),
                ("consumption", bf + db + ["consumption", "--order", order, "--json"]),
                ("findings_order", bf + db + ["findings", "--order", order, "--json"]),
                # What a planner types gets the default: a table with its provenance footer.
                ("onhand.table", bf + db + ["onhand", "--at", at]),
                ("wip.table", bf + db + ["wip", "--at", at]),
                ("consumption.table", bf + db + ["consumption", "--order", order]),
                ("findings_order.table", bf + db + ["findings", "--order", order]),
            ]
            runs += [("pass", py + ["-c", "pass"])] * per_rep
            shift = r % len(runs)  # rotate so no command always runs first in its round
            for name, cmd in runs[shift:] + runs[:shift]:
                p = spawn(cmd, cwd=self.work)
                self.s.add(f"{tier.name}.{name}", check(p, f"{tier.name} {name}"))

    def stream_phase(self, url: str) -> None:
        """Time to first byte, total time and peak RSS of the long-output commands."""
        # The simulated history runs into the future (it starts 2026-01-05 and a 1M cut
        # ends years later), and these commands default to "at now": without --at they would
        # print the events before today only, a fraction of the ledger.
        end = ["--at", self.h.big.last_at]
        cmds = {
            "events": ["events", *end], "export": ["export"], "findings": ["findings", *end],
            "hours": ["hours", *end],
        }
        for r in range(self.args.stream_reps):
            for name, argv in cmds.items():
                self.log(f"[{self.b.name}] stream {name} rep {r + 1}")
                p = self.cli(url, *argv)
                # findings exits 0 (or 1 only with --fail-on): anything else is a failure.
                check(p, name)
                self.s.add(f"stream.{name}", p, ttfb=True)
                self.s.info[f"stream.{name}.bytes"] = p.out_bytes

    def others_phase(self, url: str) -> None:
        """Peak RSS (and time, for information) of the commands that replay or read the
        whole history in one process: ``verify`` (``--deep`` replays everything in
        memory), the what-if replays under ``--policy``, and the per-order ones."""
        end, order = ["--at", self.h.big.last_at], self.h.big.orders[0]
        with open(self.h.big.path, "rb") as fh:  # a stocked component: its moves
            item = next(ev["item"] for ev in map(orjson.loads, fh)
                        if ev["type"] == "InventoryReceived")
        for name, argv in _others(str(BENCH_POLICY), end, order, item):
            self.log(f"[{self.b.name}] other {name}")
            p = self.cli(url, *argv)
            check(p, name)  # verify exits 0 on an intact ledger; findings without --fail-on too
            what_if = "--policy" in name and name.split()[0] in ("findings", "hours")
            self.s.add(f"other.{name}", p, ttfb=what_if)

    def late_phase(self, url: str) -> None:
        """Import the late tail into a copy of the big ledger, then the first query."""
        for r in range(self.args.reps):
            self.log(f"[{self.b.name}] late import rep {r + 1}/{self.args.reps}")
            late = self.b.clone(url, "late")
            p, ingest = self.cli_import(late, self.h.tail)
            q = check(self.cli(late, "onhand", "--at", self.h.tail_last_at, "--json"),
                      "late first query")
            self.s.add("late_import", p)
            self.s.add("late_first_query", q)
            self.s.add("late_total", p.wall + q.wall)
            if ingest is not None:
                self.s.add("late_ingest", ingest)
            self.b.drop("late")

    def rejected_phase(self) -> None:
        """Peak RSS and time of imports that are refused (exit 2, nothing appended): the
        big file behind one bad first line, and the big file without its item master data
        (a problem on most lines). Into a fresh ledger, which the refusal removes again."""
        bad = self.work / "rejected-one-bad-line.jsonl"
        bare = self.work / "rejected-no-items.jsonl"
        if not bad.exists():
            with open(self.h.big.path, "rb") as src, open(bad, "wb") as a, \
                    open(bare, "wb") as b:
                a.write(b'{"type":"ItemDefined","at":"not a time","id":"x-1","item":"X"}\n')
                for line in src:
                    a.write(line)
                    if b'"ItemDefined"' not in line:
                        b.write(line)
        for key, path in (("one bad first line", bad), ("no item master data", bare)):
            self.log(f"[{self.b.name}] rejected import: {key}")
            p = self.cli(self.b.fresh("rejected"), "import", str(path))
            if p.rc != 2 or "nothing appended" not in p.err.splitlines()[-1]:
                raise BenchError(f"rejected import ({key}): exit {p.rc}, expected 2: "
                                 f"{p.err.strip()[-400:]}")
            self.s.add(f"rejected.{key}", p)
            self.s.info[f"rejected.{key}.stderr_lines"] = p.err_lines
            self.b.drop("rejected")

    def phase(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one phase; on failure note it and go on, so a long run keeps what it has."""
        try:
            return fn()
        except Exception as exc:
            msg = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
            self.log(f"[{self.b.name}] {what} FAILED: {msg}")
            self.errors.append(f"{what}: {msg}")
            return None

    def small_ledger(self) -> str:
        """The small ledger, imported and caught up (not timed)."""
        small = self.b.fresh("small")
        self.cli_import(small, self.h.small.path)
        check(self.cli(small, "onhand", "--json"), "small first query")
        return small

    def run(self) -> Samples:
        """All phases in order; the big and small ledgers are dropped unless ``--keep``."""
        url = self.phase("import", self.import_phase)
        small = self.phase("small ledger", self.small_ledger)
        if url:
            self.phase("storage floor", lambda: self.floor_phase(url))
            self.phase("rebuild", lambda: self.rebuild_phase(url))
        if small:
            self.phase("queries (small)", lambda: self.query_phase(self.h.small, small))
        if url:
            self.phase("queries (big)", lambda: self.query_phase(self.h.big, url))
            self.phase("streaming", lambda: self.stream_phase(url))
            self.phase("other commands", lambda: self.others_phase(url))
            self.phase("late import", lambda: self.late_phase(url))
            self.phase("rejected imports", self.rejected_phase)
        if not self.args.keep:
            for role in ("big", "small", "late"):
                self.b.drop(role)
        return self.s


# --- the report ----------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the report table."""

    backend: str
    figure: str
    value: str
    target: str
    ratio: float | None
    ok: bool | None
    command: str
    raw: dict[str, Any] = field(default_factory=dict)

    def result(self) -> str:
        return "n/a" if self.ok is None else ("pass" if self.ok else "FAIL")


def rows_for(name: str, s: Samples, h: History, raw_label: str) -> list[Row]:
    """Turn one backend's samples into report rows (figures against issue 7's targets)."""
    m = {k: median(v) for k, v in s.t.items()}
    rss = {k: max(v) for k, v in s.rss.items()}
    n = h.big.events
    rows: list[Row] = []
    L = "$LEDGER"

    def rate(sec: float | None, count: int) -> str:
        return "n/a" if not sec else f"{count / sec:,.0f} ev/s ({sec:.3f} s)"

    def ge(ratio: float | None, target: float) -> bool | None:
        return None if ratio is None else ratio >= target

    def div(a: float | None, b: float | None) -> float | None:
        return None if not a or not b else a / b

    raw_ins, raw_read = m.get("raw_insert"), m.get("raw_read")
    imp_cmd = f"backflush --db {L} import big.jsonl"
    rows.append(Row(name, f"raw insert ({raw_label}, one table)", rate(raw_ins, n), "baseline",
                    None, None, "bench/plant.py raw_insert big.jsonl"))
    rows.append(Row(name, "raw read-back + orjson.loads", rate(raw_read, n), "baseline", None,
                    None, f"SELECT {s.info.get('payload_table', 'state')} + orjson.loads"))
    floor = m.get("floor")
    rows.append(Row(name, f"storage floor: the stored event rows alone ({', '.join(EVENT_TABLES)})",
                    rate(floor, n), "info", div(raw_ins, floor), None,
                    "bench/plant.py floor: the import's rows, written as a bulk import does"))
    ingest = m.get("ingest")
    r = div(raw_ins, ingest)
    tgt = 0.3 if name == "sqlite" else 0.2
    rows.append(Row(name, "import, ingest phase alone (run_import)", rate(ingest, n),
                    f">= {tgt}x raw insert" + (" (goal 0.5x)" if name == "sqlite" else ""),
                    r, ge(r, tgt), imp_cmd))
    if name == "postgres":
        ev_s = n / ingest if ingest else None
        rows.append(Row(name, "import, ingest rate", rate(ingest, n), ">= 30,000 ev/s",
                        None, None if ev_s is None else ev_s >= 30_000, imp_cmd))
    r = div(raw_ins, m.get("import"))
    rows.append(Row(name, "import, whole process", rate(m.get("import"), n), "info", r, None,
                    imp_cmd))
    e2e = (m["import"] + m["first_query"]) if m.get("import") and m.get("first_query") else None
    r = div((raw_ins or 0) + (raw_read or 0), e2e)
    rows.append(Row(name, "end to end: import + first query",
                    "n/a" if e2e is None else f"{e2e:.3f} s", ">= 0.25x raw insert + raw read",
                    r, ge(r, 0.25), imp_cmd + f"; backflush --db {L} onhand --at T --json"))
    if "floor_projections" in m:
        fp = m["floor_projections"]
        rows.append(Row(name, "storage floor: the projection rows alone (every bf_* table a"
                        " rebuild writes)", rate(fp, n), "info", div(raw_read, fp), None,
                        "bench/plant.py floor: the rebuild's rows, written as it writes them"))
    r = div(raw_read, m.get("rebuild"))
    rows.append(Row(name, "full rebuild, whole process", rate(m.get("rebuild"), n),
                    ">= 0.2x raw read+decode (goal 0.4x)", r, ge(r, 0.2),
                    f"backflush --db {L} rebuild"))
    for key, label, cmd in (("import", "import", imp_cmd),
                            ("rebuild", "full rebuild", f"backflush --db {L} rebuild")):
        cpu, wall = median(s.cpu.get(key, [])), m.get(key)
        if cpu and wall:
            # Two cores: a command whose CPU is near twice its wall time is at the bound.
            rows.append(Row(name, f"{label}: CPU of all its processes",
                            f"{cpu:.3f} s ({cpu / wall:.2f} CPUs busy on average)", "info",
                            None, None, cmd))
    late = m.get("late_total")
    late_cmd = f"cp ledger; backflush --db {L} import tail.jsonl; onhand --at T --json"
    rows.append(Row(name, f"late import ({h.tail_events} events, {h.tail_late} late <= 24 h)"
                    " + first query", "n/a" if late is None else f"{late:.3f} s", "<= 3 s",
                    None, None if late is None else late <= 3.0, late_cmd))
    r = div(late, m.get("rebuild"))
    rows.append(Row(name, "late import + first query / full rebuild",
                    "n/a" if r is None else f"{r:.3f}", "<= 0.1x", r,
                    None if r is None else r <= 0.1, late_cmd))
    for tier in (h.small, h.big):
        p = m.get(f"{tier.name}.pass")
        label = f"{tier.events:,} ev"
        rows.append(Row(name, f"python -c pass [{label}]",
                        f"{p * 1000:.1f} ms" if p else "n/a", "baseline", None, None,
                        "python -c pass"))
        v = m.get(f"{tier.name}.version")
        r = div(v, p)
        rows.append(Row(name, f"--version [{label}]", f"{v * 1000:.1f} ms" if v else "n/a",
                        "<= 3x python -c pass", r, None if r is None else r <= 3,
                        "backflush --version"))
        for q, cmd in (("onhand", "onhand --at T --json"), ("wip", "wip --at T --json"),
                       ("consumption", "consumption --order O --json"),
                       ("findings_order", "findings --order O --json"),
                       ("onhand.table", "onhand --at T"), ("wip.table", "wip --at T"),
                       ("consumption.table", "consumption --order O"),
                       ("findings_order.table", "findings --order O")):
            v = m.get(f"{tier.name}.{q}")
            r = div(v, p)
            shown = cmd.removesuffix(" --json") + (" (table)" if q.endswith(".table") else "")
            rows.append(Row(name, f"{shown} [{label}]",
                            f"{v * 1000:.1f} ms" if v else "n/a", "<= 5x python -c pass", r,
                            None if r is None else r <= 5, f"backflush --db {L} {cmd}"))
    f, p = m.get("big.findings_order"), m.get("big.pass")
    if f and p:
        # Issue 7 item 4 asks <= 100 ms for the per-order path; a whole process also starts
        # the interpreter, so this takes python -c pass off (still counting the CLI's start).
        rows.append(Row(name, f"findings --order O, net of python -c pass [{h.big.events:,} ev]",
                        f"{(f - p) * 1000:.1f} ms", "<= 100 ms", None, f - p <= 0.1,
                        f"backflush --db {L} findings --order O --json"))
    for q in ("events", "export", "findings", "hours"):
        key = f"stream.{q}"
        if key not in s.t:
            continue
        tt = median(s.ttfb[key])
        rows.append(Row(name, f"{q}: first output byte (total {median(s.t[key]):.2f} s)",
                        f"{tt:.3f} s", "<= 1 s", None, tt <= 1.0,
                        f"backflush --db {L} {q}{'' if q == 'export' else ' --at END'} > pipe"))
    for key, cmd in (("import", "import big.jsonl"),
                     ("first_query", "onhand --at T --json"),
                     ("rebuild", "rebuild"), ("big.onhand", "onhand --at T --json"),
                     ("big.wip", "wip --at T --json"),
                     ("big.consumption", "consumption --order O --json"),
                     ("big.findings_order", "findings --order O --json"),
                     ("stream.events", "events --at END"), ("stream.export", "export"),
                     ("stream.findings", "findings --at END"),
                     ("stream.hours", "hours --at END"),
                     ("late_import", "import tail.jsonl")):
        if key in rss:
            label = "first query after import" if key == "first_query" else cmd
            rows.append(Row(name, f"peak RSS: {label}", f"{rss[key]:.0f} MB",
                            "<= 150 MB", None, rss[key] <= 150, f"backflush --db {L} {cmd}"))
    for key in ("other.findings --policy P --at END", "other.hours --policy P --at END"):
        if key in s.ttfb:  # what-if streams: information (a take of no order holds them)
            tt = median(s.ttfb[key])
            rows.append(Row(name, f"{key[6:]}: first output byte (total "
                            f"{median(s.t[key]):.2f} s)", f"{tt:.3f} s", "info", None, None,
                            f"backflush --db {L} {key[6:]} > pipe"))
    for key in sorted(k for k in rss if k.startswith("rejected.")):
        what = key[len("rejected."):]
        lines = s.info.get(f"{key}.stderr_lines", 0)
        rows.append(Row(name, f"peak RSS: import refused, {what} (took "
                              f"{median(s.t[key]):.1f} s, {lines:,} lines of stderr)",
                        f"{rss[key]:.0f} MB", "<= 150 MB", None, rss[key] <= 150,
                        f"backflush --db $NEW import big.jsonl ({what})"))
    for key in sorted(k for k in rss if k.startswith("other.")):
        cmd = key[len("other."):]
        rows.append(Row(name, f"peak RSS: {cmd} (took {median(s.t[key]):.1f} s)",
                        f"{rss[key]:.0f} MB", "<= 150 MB", None, rss[key] <= 150,
                        f"backflush --db {L} {cmd}"))
    return rows


def markdown(rows: list[Row]) -> str:
    """The report table, ready to paste into docs/benchmarks.md."""
    out = ["| backend | figure | measured | target | ratio | result | command |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.3f}x"
        res = {"pass": "pass", "FAIL": "**FAIL**", "n/a": ""}[r.result()]
        cmd = r.command.replace("|", "\\|")
        out.append(f"| {r.backend} | {r.figure} | {r.value} | {r.target} | {ratio} | {res} |"
                   f" `{cmd}` |")
    return "\n".join(out) + "\n"


def entry_point(script: Path) -> str:
    """``module:function`` the ``backflush`` console script calls (read from the script)."""
    import re

    m = re.search(r"^from ([\w.]+) import (\w+)$", script.read_text(errors="replace"), re.M)
    if m:
        return f"{m[1]}:{m[2]}"
    from importlib.metadata import entry_points

    for ep in entry_points(group="console_scripts", name="backflush"):
        return ep.value
    return "backflush.cli.main:main"


def redact(arg: str) -> str:
    """A command-line argument with the password of a URL in it replaced by ``***``."""
    u = urlsplit(arg)
    if u.scheme.startswith("postgres") and u.password:
        return urlunsplit(u._replace(netloc=u.netloc.replace(f":{u.password}@", ":***@")))
    return arg


def script_python(script: Path) -> str:
    """The Python the ``backflush`` script runs on (its ``#!`` line), else this one."""
    first = script.read_bytes().split(b"\n", 1)[0]
    words = first[2:].decode(errors="replace").split() if first.startswith(b"#!") else []
    if words and Path(words[0]).name == "env" and len(words) > 1:
        words = [shutil.which(words[1]) or words[1]]
    if words and "python" in Path(words[0]).name:
        return words[0]
    return sys.executable


def wheel_install(work: Path, postgres: bool) -> Path:
    """This checkout built as a wheel and installed into a fresh venv, as a user installs
    it (no editable import hook, bytecode compiled by pip); returns its ``backflush``."""
    dist, venv = work / "wheel", work / "venv"
    for d in (dist, venv):
        shutil.rmtree(d, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "build", "--wheel", "-o", str(dist), str(REPO)],
                   check=True, capture_output=True)
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools' staging, not ours
    wheel = next(dist.glob("backflush-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    spec = f"{wheel}[postgres]" if postgres else str(wheel)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", spec],
                   check=True)
    return venv / "bin" / "backflush"


def git_head(py: str) -> str | None:
    """The commit of the checkout the measured ``backflush`` package is installed from."""
    try:
        where = subprocess.run(
            [py, "-P", "-c", "import backflush, os; print(os.path.dirname(backflush.__file__))"],
            capture_output=True, text=True, timeout=60,
        ).stdout.strip()
        out = subprocess.run(["git", "-C", where or str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", where or str(REPO), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
        head = out.stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0, or 1 on a failed command)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [FLOOR_CHILD]:  # (``Backend.floor``)
        name, where, url, which = argv[1:5]
        backend = SQLiteBackend(Path(where)) if name == "sqlite" else PostgresBackend(where)
        print(repr(backend.floor_here(url, which)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="big ledger size")
    ap.add_argument("--small", type=int, default=10_000, help="small ledger size (queries)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--faults", default="scrap,late", help="simulate faults, comma-separated")
    ap.add_argument("--pg", default=None, metavar="URL",
                    help="PostgreSQL server URL (the bench creates and drops its own databases)")
    ap.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    ap.add_argument("--reps", type=int, default=3, help="import/rebuild/late-import repeats")
    ap.add_argument("--query-reps", type=int, default=7, help="whole-process query repeats")
    ap.add_argument("--pass-reps", type=int, default=10, help="python -c pass samples per tier")
    ap.add_argument("--stream-reps", type=int, default=1,
                    help="repeats of events/export/findings/hours")
    ap.add_argument("--late-events", type=int, default=1000, help="size of the late file")
    ap.add_argument("--late-share", type=float, default=0.02, help="share of late events")
    ap.add_argument("--backflush", default=None, help="the backflush script (default: beside"
                    " this python)")
    ap.add_argument("--wheel", action="store_true",
                    help="build this checkout's wheel, install it into a fresh venv in the"
                    " work directory and measure that (what a user runs)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--keep", action="store_true", help="keep the ledgers")
    ap.add_argument("--timeout", type=float, default=3600.0,
                    help="seconds before a command is killed (counted as failed)")
    args = ap.parse_args(argv)
    TIMEOUT[0] = args.timeout

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    if args.wheel and args.backflush:
        ap.error("--wheel and --backflush name two installations: choose one")
    script = (wheel_install(work, bool(args.pg)) if args.wheel
              else Path(args.backflush or Path(sys.executable).parent / "backflush"))
    if not script.exists():
        ap.error(f"backflush script not found: {script}")
    # The interpreter the script runs on, for `python -c pass` and the import wrapper.
    py = script_python(script)
    bf = [str(script)]
    started = time.time()

    def log(msg: str) -> None:
        print(f"{time.time() - started:8.1f}s {msg}", file=sys.stderr, flush=True)

    log("simulating the history")
    hist = make_history(args, bf, work)
    log(f"history: big {hist.big.events} events, small {hist.small.events}, tail "
        f"{hist.tail_events} ({hist.tail_late} late, at most {hist.max_late_h} h)")
    # Measure what a user runs: an installed package has its bytecode (pip compiles it; an
    # editable install caches it on first use), but with PYTHONDONTWRITEBYTECODE set (as on
    # the shared machine) every process would compile every module it imports again.
    subprocess.run([py, "-c", COMPILE_PACKAGE], check=True, cwd=work)
    version = spawn(bf + ["--version"], cwd=work).head.decode().strip()
    backends: list[Backend] = []
    if not args.no_sqlite:
        backends.append(SQLiteBackend(work))
    if args.pg:
        backends.append(PostgresBackend(args.pg))
    if not backends:
        ap.error("nothing to measure: --no-sqlite without --pg")

    report: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python bench/plant.py " + " ".join(
                redact(a) for a in (sys.argv[1:] if argv is None else argv)),
            "backflush_version": version,
            "git": git_head(sys.executable if args.wheel else py),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_avg_start": os.getloadavg(),
            "simulate": " ".join(hist.simulate_cmd),
            "simulate_s": round(hist.simulate_s, 3),
            "events_big": hist.big.events,
            "events_small": hist.small.events,
            "tail_events": hist.tail_events,
            "tail_late": hist.tail_late,
            "held_back": hist.held_back,
            "max_late_hours": hist.max_late_h,
            "tail_shift_hours": hist.shift_h,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "pg"},
        },
        "backends": {},
        "errors": [],
    }
    rows: list[Row] = []
    status = 0
    for b in backends:
        bench = Bench(args, hist, b, bf, py, entry_point(script), work, log)
        try:
            s = bench.run()
        except Exception:  # report what was measured, then go on to the next backend
            bench.errors.append(traceback.format_exc())
            s = bench.s
        finally:
            b.close(args.keep)
        for msg in bench.errors:
            report["errors"].append({"backend": b.name, "error": msg})
            status = 1
        report["backends"][b.name] = {
            "median_s": {k: median(v) for k, v in s.t.items()},
            "samples_s": s.t,
            "peak_rss_mb": {k: max(v) for k, v in s.rss.items()},
            "cpu_s": {k: median(v) for k, v in s.cpu.items()},
            "ttfb_s": {k: median(v) for k, v in s.ttfb.items()},
            "info": s.info,
        }
        rows += rows_for(b.name, s, hist, b.raw_insert_label)
    report["meta"]["load_avg_end"] = os.getloadavg()
    report["meta"]["wall_s"] = round(time.time() - started, 1)
    report["rows"] = [
        {"backend": r.backend, "figure": r.figure, "measured": r.value, "target": r.target,
         "ratio": r.ratio, "result": r.result(), "command": r.command}
        for r in rows
    ]
    table = markdown(rows)
    (out / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    head = (f"Measured {report['meta']['date']} with `{report['meta']['command']}`"
            f" ({version}, git {report['meta']['git']}, Python {report['meta']['python']},"
            f" {report['meta']['cpus']} CPUs, load {report['meta']['load_avg_start'][0]:.2f}"
            f" at start). History: `{report['meta']['simulate']}` cut at"
            f" {hist.big.events:,} events (small ledger {hist.small.events:,}); late file"
            f" {hist.tail_events} events, {hist.tail_late} of them late (at most"
            f" {hist.max_late_h} h).\n\n")
    (out / "report.md").write_text(head + table)
    print(head + table)
    for e in report["errors"]:
        print(f"ERROR [{e['backend']}]: {e['error']}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
