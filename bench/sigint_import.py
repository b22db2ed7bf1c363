"""Ctrl-C an import during its catch-up, then time the command that finishes it.

    python bench/sigint_import.py FILE --after SECONDS [--db LEDGER] [--no-verify]

Imports FILE into a new SQLite ledger with the ``backflush`` of this interpreter's venv,
sends SIGINT after SECONDS (as a terminal's Ctrl-C does), and prints the import's exit code
and message and where the interrupted pass stopped (``bf_proj``'s ``resume``). It then times
``onhand --at 2100-01-01 --json``, whose catch-up goes on from there, and runs
``verify --deep``. Choose SECONDS past the ingest and before the catch-up ends.
(A subprocess, not ``&`` in a shell script: a non-interactive shell starts background jobs
with SIGINT ignored.)
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--after", type=float, required=True, help="seconds before SIGINT")
    ap.add_argument("--db", default="sigint.db", help="ledger to create (replaced)")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--signal", choices=("INT", "TERM"), default="INT")
    args = ap.parse_args()
    bf = str(Path(sys.executable).with_name("backflush"))
    for suffix in ("", "-wal", "-shm"):
        Path(args.db + suffix).unlink(missing_ok=True)
    p = subprocess.Popen([bf, "--db", args.db, "import", args.file],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(args.after)
    p.send_signal(signal.SIGINT if args.signal == "INT" else signal.SIGTERM)
    _, err = p.communicate()
    said = [ln for ln in err.decode().splitlines() if not ln.startswith("warning")]
    print(f"import: exit {p.returncode}; {' '.join(said)}")
    con = sqlite3.connect(args.db)
    print("bf_proj:", dict(con.execute("SELECT k, v FROM bf_proj").fetchall()))
    con.close()
    t0 = time.perf_counter()
    q = subprocess.run([bf, "--db", args.db, "onhand", "--at", "2100-01-01", "--json"],
                       capture_output=True)
    print(f"next query: exit {q.returncode}, {time.perf_counter() - t0:.2f} s")
    if not args.no_verify:
        v = subprocess.run([bf, "--db", args.db, "verify", "--deep"], capture_output=True,
                           text=True)
        print(f"verify --deep: exit {v.returncode}; {v.stdout.strip()} {v.stderr.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
