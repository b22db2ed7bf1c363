"""A query is a short process (issue 7 item 5): what a query process loads, not how long it
takes (timings live in docs/benchmarks.md; a timed test would be flaky on a shared machine).

Each command runs in a fresh interpreter through the console entry point; afterwards the
probe lists which of the modules a query must not need were imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILES = [EXAMPLES / "002-staged-backflush" / "events.jsonl",
         EXAMPLES / "001-terminals-and-scanner" / "events.jsonl"]

PROBE = """
import sys
sys.argv = ["backflush", *sys.argv[1:]]
from backflush.cli.main import main
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print("LOADED", ",".join(sorted(sys.modules)), file=sys.stderr)
"""

# Never needed to answer a query: the event store's former datastores and pool, the pydantic
# models, the importer, policy parsing (no --policy given).
NEVER = ("eventsourcing", "psycopg_pool", "pydantic", "backflush.ledger.events",
         "backflush.ledger.importer", "backflush.policy")
# Not needed when the answer is read from the materialised history (onhand, wip): the replay
# engine and findings, the chain's hashing and the table footer's provenance.
MATERIALISED = NEVER + ("backflush.projections.engine", "backflush.projections.findings",
                        "backflush.ledger.anchor", "backflush.ledger.codec", "hashlib",
                        "backflush.cli.provenance")

# What a query in a machine format never needs (see the tests below).
# (``threading``: the connections' locks are ``_thread``'s, the lock notice a writer's.)
LIGHT = ("click", "orjson", "dataclasses", "inspect", "uuid", "typing", "threading")


def loaded(*args: str, probe: str = PROBE) -> set[str]:
    p = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    line = [x for x in p.stderr.splitlines() if x.startswith("LOADED ")][-1]
    return set(line.removeprefix("LOADED ").split(","))


def forbidden(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if m in names or m.startswith(tuple(n + "." for n in names))}


@pytest.fixture
def ledger_db(db_url):
    for f in FILES:
        p = subprocess.run([sys.executable, "-m", "backflush", "--db", db_url, "import", str(f)],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
    return db_url


def _an_order(db: str) -> str:
    p = subprocess.run([sys.executable, "-m", "backflush", "--db", db, "events", "--json",
                        "--type", "OrderCreated"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)[0]["order"]


def test_materialised_queries_load_neither_engine_nor_store_framework(ledger_db):
    for args in (["onhand", "--at", "2026-11-03T12:00:00Z", "--json"],
                 ["wip", "--at", "2026-11-03", "--json"],
                 ["onhand", "--item", "WHS6", "--json"]):
        mods = loaded("--db", ledger_db, *args)
        # Nor click (``cli.quick``), nor orjson and the dataclasses/inspect/uuid it loads:
        # a small answer is encoded by the standard library (``cli.output.LIGHT_ROWS``).
        # Nor typing: annotations only, under a TYPE_CHECKING of the module's own.
        assert forbidden(mods, MATERIALISED + LIGHT) == set(), args
        # Nor psycopg: on PostgreSQL a read-only query goes through libpq (ledger.libpq).
        assert forbidden(mods, ("psycopg", "psycopg_binary")) == set(), args


def test_order_queries_replay_one_order_without_models(ledger_db):
    order = _an_order(ledger_db)
    for args in (["consumption", "--order", order, "--json"],
                 ["findings", "--order", order, "--json"]):
        mods = loaded("--db", ledger_db, *args)
        assert forbidden(mods, NEVER + ("psycopg", "psycopg_binary")) == set(), args
        # Decoding one order's events needs no hashing; a machine format needs no click
        # (``cli.quick``).
        assert forbidden(mods, ("hashlib",) + LIGHT) == set(), args
        # findings --order answers from the order's own events (the audit's path), which
        # reads the materialised history: it never replays the whole ledger.
        assert "backflush.projections.engine" in mods


def test_table_output_loads_no_models_and_materialised_queries_no_engine(ledger_db):
    # The default (table) format adds the provenance footer: still no models, and the
    # materialised queries still no engine. Nor click (``cli.quick`` serves tables too), nor
    # what the footer once needed: the anchors' module, hashing (it names the history by the
    # chain's last link, read off a key), typing.
    order = _an_order(ledger_db)
    table = LIGHT + ("hashlib", "backflush.ledger.anchor", "psycopg", "psycopg_binary")
    for args, never in (
            (["onhand", "--at", "2026-11-03T12:00:00Z"], NEVER + ("backflush.projections.engine",)),
            (["wip", "--at", "2026-11-03"], NEVER + ("backflush.projections.engine",)),
            (["consumption", "--order", order], NEVER),
            (["findings", "--order", order], NEVER)):
        assert forbidden(loaded("--db", ledger_db, *args), never + table) == set(), args


# An editable install's import hook loads ``re`` and ``urllib.parse`` at start-up (a wheel's
# process does not): forgotten first, so that only this command's own imports show.
FORGETFUL_PROBE = """
import sys
for k in [k for k in sys.modules
          if k.split(".")[0] in ("re", "enum", "json", "urllib", "ipaddress")]:
    del sys.modules[k]
""" + PROBE


def test_a_query_loads_no_regex_json_package_or_url_parser(ledger_db):
    # ``re`` (with ``enum``), which the ``json`` package loads, and ``urllib.parse`` (with
    # ``ipaddress``) were 5-7 ms of a 35-45 ms query on PostgreSQL: the escaping checks
    # ``str.isprintable`` first, the dates are parsed by hand, a plain ledger URL has
    # nothing to redact, and JSON is read and written by ``json``'s C parts alone.
    order = _an_order(ledger_db)
    for args in (["onhand", "--at", "2026-11-03T12:00:00Z"],
                 ["wip", "--at", "2026-11-03"],
                 ["wip", "--at", "2026-11-03", "--json"],
                 ["consumption", "--order", order],
                 ["findings", "--order", order, "--json"]):
        mods = loaded("--db", ledger_db, *args, probe=FORGETFUL_PROBE)
        assert forbidden(mods, ("re", "enum", "json", "urllib", "ipaddress")) == set(), args


def test_a_policy_loads_the_policy_parser(ledger_db, tmp_path):
    """The structure above is lazy, not missing: asking for a what-if loads what it needs."""
    p = tmp_path / "p.json"
    p.write_text('{"rules": [{"trigger": "finish", "flush": ["finish"]}]}')
    mods = loaded("--db", ledger_db, "onhand", "--json", "--policy", str(p))
    assert "backflush.policy" in mods and "backflush.projections.engine" in mods


def test_version_loads_only_the_command_line():
    mods = loaded("--version")
    assert forbidden(mods, MATERIALISED + ("backflush.api", "backflush.ledger", "sqlite3",
                                           "psycopg", "orjson", "decimal")) == set()


def test_version_fast_path_says_what_click_says(capsys, monkeypatch):
    # `backflush --version` alone is answered before click loads; its text must stay
    # click's version_option's (and a longer command line still goes through click).
    from backflush.cli.main import cli, main
    from click.testing import CliRunner

    monkeypatch.setattr(sys, "argv", ["backflush", "--version"])
    main()
    fast = capsys.readouterr().out
    assert fast == CliRunner().invoke(cli, ["--version"]).output
    p = subprocess.run([sys.executable, "-c", PROBE, "--version"], capture_output=True,
                       text=True, timeout=60)
    assert "click" not in p.stderr.split("LOADED", 1)[1].split(",")


# An import's process forks the replay worker of its catch-up, which starts from this
# process's memory: pydantic with the event models is ~20 MB of it (issue 7's 150 MB).
IMPORT_PROBE = """
import sys
import backflush.ledger.importer as importer
importer.PIPELINE_MIN_BYTES = int(sys.argv.pop(1))  # files from this size on: pipelined
""" + PROBE


def test_an_import_of_plain_lines_does_not_load_the_models(db_url, tmp_path):
    """The models are the reference reading of the lines the fast path is not sure of:
    master data with nested parts, escapes, a bad line. A file of plain lines (a scanner's
    day of picks, puts and reports) is read without them; the first import of a plant, with
    its master data, validates in the import's worker process, not in the one that forks
    the catch-up's replay worker."""
    from backflush.ledger import parallel

    plant = tmp_path / "plant.jsonl"
    subprocess.run([sys.executable, "-m", "backflush", "simulate", "--orders", "40",
                    "--seed", "5", "-o", str(plant)], check=True, timeout=120)
    lines = plant.read_bytes().splitlines(keepends=True)
    master = [x for x in lines if b'"OrderCreated"' in x or b'Defined"' in x
              or b'"ProductionParametersSet"' in x]
    later = [x for x in lines if x not in master]
    first, day = tmp_path / "first.jsonl", tmp_path / "day.jsonl"
    first.write_bytes(b"".join(master))
    day.write_bytes(b"".join(later))
    big = 10 ** 12
    mods = loaded(str(big), "--db", db_url, "import", str(first), probe=IMPORT_PROBE)
    assert "pydantic" in mods  # (BOMs and routes: nested parts, the reference reading)
    mods = loaded(str(big), "--db", db_url, "import", str(day), probe=IMPORT_PROBE)
    assert forbidden(mods, ("pydantic", "backflush.ledger.events")) == set()
    if parallel.usable():
        again = str(tmp_path / "again.db")
        mods = loaded("1", "--db", again, "import", str(plant), probe=IMPORT_PROBE)
        assert forbidden(mods, ("pydantic", "backflush.ledger.events")) == set()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(later[0].replace(b'"qty":', b'"qty": "x", "q":'))
    p = subprocess.run([sys.executable, "-m", "backflush", "--db", db_url, "import", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "bad.jsonl:1: " in p.stderr, p.stderr
