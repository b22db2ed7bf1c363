# backflush developer / CI entry points.
#   make venv   create .venv (python3) and install the package with test extras
#   make demo   import the examples into ./backflush.db and print findings and an audit
#   make test   ruff + pytest, with a throwaway PostgreSQL cluster (see scripts/test.sh)

PYTHON ?= python3
VENV   := .venv
# Re-install whenever pyproject.toml or setup.py is newer than the stamp, or a module that
# was compiled in place (a .c beside its .py, setup.py) has changed since.
STAMP  := $(VENV)/.installed-stamp
COMPILED := $(patsubst %.c,%.py,$(wildcard projections/*.c ledger/*.c))

.PHONY: venv demo test clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py $(COMPILED)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	@touch $@

demo: venv
	$(VENV)/bin/backflush --db backflush.db demo

test: venv
	bash scripts/test.sh

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis build
