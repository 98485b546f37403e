# Two entry points for a fresh machine: `make run` (set up, launch the app) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test bench-generate clean

setup:
	@bash scripts/setup.sh "$(VENV)"

run: setup
	$(PY) -m app

# Tests run offscreen with FOLIO_HOME in a temporary folder (see tests/conftest.py).
test: setup
	LD_PRELOAD="$$($(PY) -m app.blas)" QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_ARGS)

bench-generate: setup
	LD_PRELOAD="$$($(PY) -m app.blas)" $(PY) -m app bench generate --model $(MODEL)

clean:
	rm -rf $(VENV) build dist *.egg-info
