# Two commands for a fresh clone: `make run` (server on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-services lint migrate messages messages-update cluster bench

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

migrate: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput -v0

# The compiled translation catalogues (.mo files are build output): Django's compilemessages
# with GNU gettext installed, else polib. The settings load with DEBUG on; nothing is served.
messages: export DJANGO_DEBUG ?= true
messages: $(VENV)/.installed
	$(BIN)/python manage.py build_catalogues -v0

# After changing a message the catalogues are extracted again (needs GNU gettext); then every
# new or fuzzy entry of locale/zh_Hans is translated (tests/test_i18n.py fails until it is).
MAKEMESSAGES = $(BIN)/python manage.py makemessages -l zh_Hans --ignore=.venv --ignore=tests --ignore=bench --no-wrap \
	--ignore=staticfiles
messages-update: export DJANGO_DEBUG ?= true
messages-update: $(VENV)/.installed
	$(MAKEMESSAGES)
	$(MAKEMESSAGES) -d djangojs

# The development server: DEBUG on, so the embedded development keys serve (without DEBUG the
# server refuses to start on them; see README.md, Configuration).
run migrate: export DJANGO_DEBUG ?= true
run: migrate messages
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py seed_demo --url http://$(HOST):$(PORT)/
	$(BIN)/daphne -b $(HOST) -p $(PORT) --ping-interval 20 --ping-timeout 30 chatproject.asgi:application

# N daphne processes on PORT+1..PORT+N behind nginx on PORT, on REDIS_URL and DATABASE_URL
# (default: the local Redis and PostgreSQL database `chat`); Ctrl-C stops them all.
N ?= 2
cluster: $(VENV)/.installed messages
	$(BIN)/python deploy/cluster.py --processes $(N) --port $(PORT) --host $(HOST)

test: $(VENV)/.installed messages
	$(BIN)/pytest -q

# The whole suite again on the local Redis and PostgreSQL; nothing is deselected, a missing service fails.
test-services: $(VENV)/.installed messages
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/15} \
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} \
	CHAT_REQUIRE_SERVICES=1 $(BIN)/pytest -q

# The load benchmark: each server on free ports, every scenario, one markdown table
# (bench/README.md). BENCH_ARGS="--quick", "--services", "--cluster", "--only ack200"; SERVER=uvicorn.
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Lint, format check and the import rules (pyproject.toml: ruff, import-linter's layer contracts).
lint: $(VENV)/.installed
	$(BIN)/ruff check chat chatproject tests bench deploy manage.py
	$(BIN)/ruff format --check chat chatproject tests bench deploy manage.py
	$(BIN)/lint-imports
