"""What a piece of code imports, seen in a fresh interpreter (for the tests that keep a
query process's start-up light)."""

from __future__ import annotations

import subprocess
import sys

_RUN = """
import sys
forget = {forget!r}
for k in [k for k in sys.modules if k.split(".")[0] in forget]:
    del sys.modules[k]
{code}
print(sorted({{k.split(".")[0] for k in sys.modules}} & set(forget)))
"""


def reimported(code: str, forget: tuple[str, ...]) -> list[str]:
    """The top-level names of ``forget`` that ``code`` imports, run in a fresh interpreter
    after those modules are forgotten (an editable install's import hook loads some of
    them at start-up, which a wheel's process does not)."""
    p = subprocess.run([sys.executable, "-c", _RUN.format(forget=forget, code=code)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return eval(p.stdout.strip().splitlines()[-1])  # noqa: S307  (our own repr of a list)
