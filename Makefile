# Mission Ledger developer commands. Each target sets up the virtualenv it needs.
#   make serve   run the service (embedded SQLite in ./.mission-ledger, no configuration)
#   make test    the whole suite: lint, types, import rules, unit, integration (real PostgreSQL
#                and SQLite), API and end-to-end tests
#   make bench   the benchmarks (see bench/README.md)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint unit bench clean

$(STAMP): pyproject.toml clients/python/pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c .ci/constraints.txt -e '.[test,dev]' -e clients/python
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/mission-ledger serve

lint: $(STAMP)
	$(BIN)/ruff check ledger projections api tests bench clients/python
	$(BIN)/ruff format --check ledger projections api tests bench clients/python
	$(BIN)/mypy
	$(BIN)/mypy clients/python/src
	$(BIN)/lint-imports --no-cache

# Every Python process of the suite (pytest's workers, and each server and writer process an
# end-to-end test starts: well over a hundred) reads this repository's modules compiled once.
# Where the environment sets PYTHONDONTWRITEBYTECODE (this machine class does), each would
# otherwise compile them from source again: about 0.7 s of CPU a server start.
# Three workers on two vCPUs: the end-to-end tests wait on the servers they start, so two
# workers left the CPUs about 30 % idle (2026-12-07: 513 s with two, 453 s with three, the
# CPUs 93 % busy with three).
test: lint
	$(BIN)/python -m compileall -q -j 0 -x node_modules ledger projections api tests bench clients/python >/dev/null
	env -u PYTHONDONTWRITEBYTECODE .ci/with-postgres $(BIN)/pytest -n 3 --dist loadgroup -q --durations=15

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

bench: $(STAMP)
	.ci/with-postgres $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
