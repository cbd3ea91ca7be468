# Two commands for a fresh clone: `make run` (server on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-services migrate cluster bench

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

migrate: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput -v0

# The development server: DEBUG on, so the embedded development keys serve (without DEBUG the
# server refuses to start on them; see README.md, Configuration).
run migrate: export DJANGO_DEBUG ?= true
run: migrate
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py seed_demo --url http://$(HOST):$(PORT)/
	$(BIN)/daphne -b $(HOST) -p $(PORT) --ping-interval 20 --ping-timeout 30 chatproject.asgi:application

# N daphne processes on PORT+1..PORT+N behind nginx on PORT, on REDIS_URL and DATABASE_URL
# (default: the local Redis and PostgreSQL database `chat`); Ctrl-C stops them all.
N ?= 2
cluster: $(VENV)/.installed
	$(BIN)/python deploy/cluster.py --processes $(N) --port $(PORT) --host $(HOST)

test: $(VENV)/.installed
	$(BIN)/pytest -q

# The whole suite again on the local Redis and PostgreSQL; nothing is deselected, a missing service fails.
test-services: $(VENV)/.installed
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/15} \
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} \
	CHAT_REQUIRE_SERVICES=1 $(BIN)/pytest -q

# The load benchmark: each server on free ports, every scenario, one markdown table
# (bench/README.md). BENCH_ARGS="--quick", "--services", "--cluster", "--only ack200"; SERVER=uvicorn.
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)
