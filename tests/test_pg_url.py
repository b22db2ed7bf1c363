"""``ledger.store._pg_params``: the hand split of plain PostgreSQL URLs gives what
``urllib.parse`` gives (the parameters, or the same error), for any URL."""

from __future__ import annotations

import pytest
from backflush.ledger.store import _pg_params, _pg_params_parsed
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backflush.errors import BadInput

# The characters URLs are made of, the odd ones included, so that both paths are exercised.
PIECE = st.text(alphabet="aZ09-._~:@/!$&'()*+,=%[]?#; \tÄ\\", max_size=12)


def _same(url: str) -> None:
    try:
        want = _pg_params_parsed(url)
    except BadInput as exc:
        with pytest.raises(BadInput) as got:
            _pg_params(url)
        assert str(got.value) == str(exc)
        return
    assert _pg_params(url) == want


@settings(max_examples=2000, deadline=None)
@given(scheme=st.sampled_from(["postgresql", "postgres"]), user=PIECE, password=PIECE,
       host=PIECE, port=st.one_of(st.just(""), st.integers(-1, 70000).map(str), PIECE),
       path=PIECE, at=st.booleans(), colon=st.booleans())
@example(scheme="postgresql", user="u", password="p", host="H", port="05432", path="/db",
         at=True, colon=True)
@example(scheme="postgresql", user="", password="", host="", port="0", path="",
         at=False, colon=True)
def test_the_hand_split_agrees_with_urllib(scheme, user, password, host, port, path, at,
                                           colon):
    auth = f"{user}:{password}@" if at else ""
    _same(f"{scheme}://{auth}{host}{':' + port if colon else ''}/{path}")


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5432/backflush",
    "postgresql://alice:s3cret@db.example.com:6543/plant",
    "postgresql://localhost/plant",
    "postgresql://",
    "postgres://u@h",
    "postgresql://u:p%40ss@h/d%20b",         # percent-escapes: urllib's path
    "postgresql://[::1]:5432/db",            # IPv6: urllib's path
    "postgresql://h:99999/db",               # out of range: the same error
    "postgresql://h:x/db",                   # not a number: the same error
    "postgresql://h//db",
    "postgresql://u@x@h:1/d@b",
])
def test_plain_and_odd_urls(url):
    _same(url)


class _NoUrllib:
    """A meta path finder that refuses ``urllib``: any import of it raises."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "urllib" or name.startswith("urllib."):
            raise ImportError(f"{name} imported")
        return None


def test_a_plain_url_is_split_without_urllib(monkeypatch):
    import sys

    for name in ("urllib.parse", "urllib"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoUrllib(), *sys.meta_path])
    assert _pg_params("postgresql://alice:pw@Db.Example:6543/plant") == {
        "dbname": "plant", "host": "db.example", "port": "6543", "user": "alice",
        "password": "pw"}
    with pytest.raises(ImportError):  # (the finder works: the general path needs urllib)
        _pg_params("postgresql://alice:p%40ss@h/plant")


@pytest.mark.parametrize("port, reason", [("99999", "Port out of range 0-65535"),
                                          ("x", "Port could not be cast to integer value")])
def test_a_bad_port_is_a_one_line_error_naming_db_and_not_the_password(port, reason):
    import subprocess
    import sys

    url = f"postgresql://alice:s3cret@127.0.0.1:{port}/plant"
    for argv in (["onhand", "--json"], ["onhand"], ["import", "/dev/null"]):
        p = subprocess.run([sys.executable, "-m", "backflush", "--db", url, *argv],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (argv, p.stderr)
        assert p.stderr.startswith("Error: --db: not a usable PostgreSQL URL: " + reason)
        assert len(p.stderr.splitlines()) == 1 and "s3cret" not in p.stderr


def test_a_postgresql_ledger_without_psycopg_is_a_one_line_error(monkeypatch, tmp_path, pg_db):
    """An installation without ``backflush[postgres]`` asked for a PostgreSQL ledger says so
    and how to get it (exit 2), whatever the command, instead of a traceback; a server that
    cannot be reached is exit 3, also for ``verify``, never "no ledger there"."""
    import sys

    from backflush.cli.main import cli
    from click.testing import CliRunner

    import backflush

    runner = CliRunner()
    down = "postgresql://nobody@127.0.0.1:1/nothing"
    for args in (["rebuild"], ["verify"], ["onhand", "--json"]):
        r = runner.invoke(cli, ["--db", down, *args])
        assert r.exit_code == 3 and "database:" in r.output, (args, r.output)
    path = tmp_path / "e.jsonl"
    path.write_text('{"type":"ItemDefined","at":"2026-01-05T06:00:00Z","item":"C1"}\n')
    assert runner.invoke(cli, ["--db", pg_db, "import", str(path)]).exit_code == 0
    monkeypatch.setitem(sys.modules, "psycopg", None)  # ``import psycopg`` raises ImportError
    # (a caught-up query reads through libpq alone, and needs no psycopg)
    assert runner.invoke(cli, ["--db", pg_db, "onhand", "--json"]).output == "[]\n"
    for args in (["import", str(path)], ["rebuild"], ["verify"]):
        r = runner.invoke(cli, ["--db", pg_db, *args])
        assert r.exit_code == 2, (args, r.output, r.exception)
        last = r.output.strip().splitlines()[-1]
        assert last.startswith("Error: a PostgreSQL ledger needs psycopg"), r.output
        assert "pip install 'backflush[postgres]'" in last
    with pytest.raises(backflush.DriverMissing):
        backflush.Ledger(pg_db).rebuild()


def _tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def test_a_read_never_makes_a_ledger_in_a_database_that_has_none(pg_db, pg_url):
    """A mistyped ``--db``: a server's database that holds no ledger (its maintenance
    database, a colleague's) or that does not exist is "no ledger there", exit 2, as a SQLite
    path that does not exist; the read creates nothing there. An import makes the ledger in
    an existing database, and says so plainly when the database itself is missing."""
    from backflush.cli.main import cli
    from click.testing import CliRunner

    runner = CliRunner()
    missing = pg_db.rsplit("/", 1)[0] + "/no_such_plant"
    for args in (["onhand"], ["onhand", "--json"], ["wip", "--csv"], ["events"], ["export"],
                 ["findings", "--order", "P1"], ["audit", "P1"], ["rebuild"], ["verify"],
                 ["anchor"]):
        r = runner.invoke(cli, ["--db", pg_db, *args])
        assert r.exit_code == 2, (args, r.output)
        assert r.output.startswith(f"Error: no backflush ledger at {pg_db}: import into"), r.output
        r = runner.invoke(cli, ["--db", missing, *args])
        assert r.exit_code == 2, (args, r.output)
        assert "the server has no database 'no_such_plant'" in r.output, r.output
    assert _tables(pg_db) == []
    # A role the server does not know "does not exist" too: that is not "no ledger here".
    nobody = pg_db.replace("postgresql://postgres@", "postgresql://nobody_here@")
    r = runner.invoke(cli, ["--db", nobody, "onhand"])
    assert r.exit_code == 3 and 'role "nobody_here" does not exist' in r.output, r.output
    r = runner.invoke(cli, ["--db", missing, "import", "/dev/null"])
    assert r.exit_code == 2 and "createdb no_such_plant" in r.output, r.output
    r = runner.invoke(cli, ["--db", pg_db, "import", "/dev/null"])
    assert r.exit_code == 0, r.output
    assert "bf_events" in _tables(pg_db)
    assert runner.invoke(cli, ["--db", pg_db, "onhand", "--json"]).output == "[]\n"


def test_a_read_of_a_sqlite_file_that_is_no_ledger_is_exit_2(tmp_path):
    """Another program's SQLite file (or an empty one) named by ``--db``: exit 2, and its
    tables stay as they were."""
    import sqlite3

    from backflush.cli.main import cli
    from click.testing import CliRunner

    other = tmp_path / "erp.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE items (id TEXT)")
    conn.close()
    for args in (["onhand", "--json"], ["onhand"], ["verify"], ["rebuild"]):
        r = CliRunner().invoke(cli, ["--db", str(other), *args])
        assert r.exit_code == 2, (args, r.output)
        assert r.output.startswith(f"Error: no backflush ledger at {other}"), r.output
    with sqlite3.connect(other) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert names == ["items"]
    empty = tmp_path / "empty.db"
    empty.touch()
    r = CliRunner().invoke(cli, ["--db", str(empty), "onhand"])
    assert r.exit_code == 2 and r.output.startswith(f"Error: no ledger at {empty}"), r.output
    assert empty.stat().st_size == 0
    r = CliRunner().invoke(cli, ["--db", str(empty), "import", "/dev/null"])
    assert r.exit_code == 0, r.output
    assert CliRunner().invoke(cli, ["--db", str(empty), "onhand", "--json"]).output == "[]\n"
