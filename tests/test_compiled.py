"""The compiled engine (``setup.py``) gives the answers of its Python source.

The rest of the suite runs against whatever the install compiled, and the golden answers
were written by pure Python. Those answers are fixed, though. This file also replays fresh
histories, with every fault and with reversals, twice: once in this process through the
compiled modules, and once in a child process that imports the same modules from their
``.py`` files. The answers must be the same bytes. A new Cython, a new compiled module or a
construct that Cython reads differently from CPython then shows up here, on histories that
nobody wrote answers for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parent.parent


# The child: a finder ahead of every other answers for the compiled modules with their
# .py files, then the same answers as the golden test's are printed as JSON.
CHILD = """
import importlib.util, sys
PURE = {pure!r}

class Pure:
    def find_spec(self, name, path=None, target=None):
        if name in PURE:
            return importlib.util.spec_from_file_location(name, PURE[name])
        return None

sys.meta_path.insert(0, Pure())
sys.path.insert(0, {tests!r})
from pathlib import Path
import orjson
import test_golden
import backflush.projections.engine as engine
assert engine.__file__.endswith(".py"), engine.__file__
history = Path(sys.argv[1])
got = test_golden.answers_of_file(history, Path(sys.argv[2]))
sys.stdout.buffer.write(orjson.dumps(got, option=orjson.OPT_SORT_KEYS))
"""


@pytest.fixture(scope="module")
def pure() -> dict[str, str]:
    from conftest import compiled_in_tree

    found = {name: py for name, (_so, py) in compiled_in_tree().items()}
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs the engine compiled, but nothing is compiled here",
                        pytrace=False)
        pytest.skip("this install is pure Python (BACKFLUSH_PURE, or no C compiler)")
    return found


@pytest.mark.parametrize("orders,seed,faults", [
    (70, 21, {"double-flush": 0.3, "scrap": 0.3, "late": 0.3, "no-stock": 0.2,
              "reversal": 0.4}),
    (50, 22, {"late": 0.5, "scrap": 0.5}),
], ids=["every-fault-and-reversals", "late-and-scrap"])
def test_compiled_and_pure_give_the_same_answers(tmp_path, pure, orders, seed, faults):
    import test_golden
    from backflush.ledger.simulate import simulate
    from backflush.projections import engine

    assert not engine.__file__.endswith(".py"), "this process should run the compiled engine"
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"".join(orjson.dumps(e) + b"\n"
                                 for e in simulate(orders, seed, faults)))
    (tmp_path / "c").mkdir()
    (tmp_path / "p").mkdir()
    compiled = orjson.dumps(test_golden.answers_of_file(history, tmp_path / "c" / "l.db"),
                            option=orjson.OPT_SORT_KEYS)
    child = CHILD.format(pure=pure, tests=str(REPO / "tests"))
    proc = subprocess.run([sys.executable, "-c", child, str(history), str(tmp_path / "p" / "l.db")],
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert proc.stdout == compiled
    # Not an empty agreement: the histories hold findings and reversals.
    answers = orjson.loads(compiled)
    assert answers["findings"] and answers["consumption"]
