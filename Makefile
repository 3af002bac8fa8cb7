# Two commands for a newcomer: `make run` (service on SQLite + a dev key) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEV_USER ?= dev_user

.PHONY: install run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

run: install
	$(BIN)/flask --app potpie_flask db upgrade
	@echo "Development API key for $(DEV_USER) (use it as the x-api-key header):"
	@key=$$($(BIN)/flask --app potpie_flask keys create --user-id $(DEV_USER) --label dev) \
		&& echo "$$key" | tail -n 1
	$(BIN)/gunicorn wsgi:app -c gunicorn.conf.py

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# Not part of the tests: prints throughput tables (README, Performance); installs wrk if missing.
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
