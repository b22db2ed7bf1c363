#!/usr/bin/env bash
# Lint and test. Used by `make test` (and therefore by .ci/run).
#
# If BACKFLUSH_TEST_PG is unset, a throwaway PostgreSQL cluster is started with
# scripts/pg.sh in a temporary directory, its URL is exported as BACKFLUSH_TEST_PG for
# pytest, and the cluster is always stopped and removed afterwards.
# If the cluster cannot start: with CI=true this fails; otherwise the tests run anyway and
# the PostgreSQL tests skip with a reason.
# Extra arguments are passed to pytest. Exit status: pytest's, or ruff's if pytest passed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}
CI=${CI:-}

PGDIR=""
cleanup() {
    if [[ -n "$PGDIR" && -d "$PGDIR" ]]; then
        bash scripts/pg.sh stop "$PGDIR" || rm -rf -- "$PGDIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== ruff check ." >&2
"$VENV/bin/ruff" check .
ruff_rc=$?

if [[ -z "${BACKFLUSH_TEST_PG:-}" ]]; then
    PGDIR=$(mktemp -d /tmp/backflush-pg.XXXXXX) || exit 1
    echo "== starting throwaway PostgreSQL in $PGDIR" >&2
    if url=$(bash scripts/pg.sh start "$PGDIR"); then
        export BACKFLUSH_TEST_PG="$url"
        echo "== BACKFLUSH_TEST_PG=$url" >&2
    elif [[ "$CI" == "true" ]]; then
        echo "error: could not start PostgreSQL and CI=true; refusing to skip PostgreSQL tests" >&2
        exit 1
    else
        echo "warning: could not start PostgreSQL; PostgreSQL tests will be skipped" >&2
    fi
else
    echo "== using BACKFLUSH_TEST_PG=$BACKFLUSH_TEST_PG" >&2
fi

echo "== pytest" >&2
"$VENV/bin/python" -m pytest -q "$@"
pytest_rc=$?

if [[ $pytest_rc -ne 0 ]]; then
    exit $pytest_rc
fi
if [[ $ruff_rc -ne 0 ]]; then
    echo "error: ruff check failed" >&2
    exit $ruff_rc
fi
exit 0
