# Pantheon: `make run` serves the demo, `make test` runs the suite, `make check` is the CI gate.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
PG_URL ?= postgres://postgres@127.0.0.1:5432/pantheon
TEST_DATABASE_URL ?= $(if $(filter postgres%,$(DATABASE_URL)),$(DATABASE_URL),$(PG_URL))
export TEST_DATABASE_URL

.PHONY: install install-dev run test check lint fuzz bench-turns bench-ledger bench-serving clean

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

# Tests and tooling on top of the runtime.
$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

install-dev: $(BIN)/.installed-dev

run: install
	DEBUG=true $(BIN)/python manage.py migrate --noinput
	DEBUG=true $(BIN)/python manage.py seed_demo
	@echo ""
	@echo "  Pantheon is starting on 127.0.0.1:$(PORT) (the API and the console; / is no page)"
	@echo "  API:    http://127.0.0.1:$(PORT)/api/v1/health   docs: http://127.0.0.1:$(PORT)/api/docs/"
	@echo "  Admin:  http://127.0.0.1:$(PORT)/admin/   (demo / pantheon-demo)"
	@echo ""
	DEBUG=true $(BIN)/python -m pantheon.serve --host 127.0.0.1 --port $(PORT)

# Tests run on PostgreSQL, the production database, in TEST_WORKERS processes (pytest-xdist; a
# worker takes the next test when it is free): most of the suite's time is spent waiting on the
# servers it starts. TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2
test: install-dev
	@$(BIN)/python -m pantheon.pgcheck "$(TEST_DATABASE_URL)"
	$(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal) $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run

check: lint test

# The API against its schema with schemathesis, long: 200 examples per operation, every phase
# (stateful included). `make check` runs the same test with 10 examples per operation.
FUZZ_EXAMPLES ?= 200
fuzz: install-dev
	@$(BIN)/python -m pantheon.pgcheck "$(TEST_DATABASE_URL)"
	LOG_LEVEL=ERROR SCHEMATHESIS_MAX_EXAMPLES=$(FUZZ_EXAMPLES) SCHEMATHESIS_TIMEOUT=3600 \
		$(BIN)/python -m pytest -p no:cacheprovider -s pantheon/tests/test_schemathesis.py

bench-turns: install-dev
	$(BIN)/python bench/turns.py

bench-ledger: install-dev
	$(BIN)/python bench/ledger.py

bench-serving: install-dev
	$(BIN)/python bench/serving.py

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-wal db.sqlite3-shm .pytest_cache .ruff_cache
