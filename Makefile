# The two commands that matter: `make run` serves the API, `make test` runs every check.
SHELL := /bin/bash
PORT ?= 8000
# docker compose --env-file .env -f docker/docker-compose.yml, after checking that Compose is
# v2.24+ (and with docker/docker-compose.db-port.yml when DB_PORT is set). --env-file: with
# -f docker/..., compose would read ${VAR} values from docker/.env (the project directory is
# the compose file's folder), not the .env docs/DEPLOY.md has you edit.
COMPOSE := bash scripts/lib/compose.sh
# Development tools (ruff, schemathesis, playwright, ...: requirements-dev.txt) only for the
# targets that use them; the service's own targets install requirements.txt alone.
VENV_PY := source scripts/lib/bootstrap.sh &&
RUN_PY := APM_BOOTSTRAP=runtime source scripts/lib/bootstrap.sh &&

.PHONY: run test step6 migrate install install-dev lint bench-ingest bench bench-sqlite bench-storage bench-dashboard bench-fresh bench-live seed up down logs key manage openapi demo

install:  ## create .venv and install the pinned runtime requirements (make install-dev: the test tools too)
	@$(RUN_PY) true

install-dev:
	@$(VENV_PY) true

run:  ## migrate and serve on 127.0.0.1:$(PORT) (SQLite unless DATABASE_URL is set), with the background refresher
	@$(RUN_PY) export DJANGO_DEBUG=$${DJANGO_DEBUG:-1} && \
	  "$$PY" manage.py migrate --noinput && \
	  "$$PY" manage.py local_credentials --url http://127.0.0.1:$(PORT) && \
	  { "$$PY" manage.py refresh_rollups --follow & refresher=$$!; \
	    trap 'kill $$refresher 2>/dev/null; wait $$refresher 2>/dev/null' EXIT; \
	    "$$PY" manage.py runserver 127.0.0.1:$(PORT); }

key:  ## print the local admin API key (created on first use): export APM_KEY=$$(make -s key)
	@$(RUN_PY) DJANGO_DEBUG=$${DJANGO_DEBUG:-1} "$$PY" manage.py migrate --noinput -v 0 && \
	  DJANGO_DEBUG=$${DJANGO_DEBUG:-1} "$$PY" manage.py local_credentials --key-only

manage:  ## any manage.py command in .venv, DEBUG on by default: make manage ARGS="list_api_keys"
	@$(RUN_PY) DJANGO_DEBUG=$${DJANGO_DEBUG:-1} "$$PY" manage.py $(ARGS)

test: step6  ## lint + migration checks + tests on SQLite, PostgreSQL (and TimescaleDB)

step6:
	@bash scripts/step6_test.sh

migrate:
	@$(RUN_PY) DJANGO_DEBUG=$${DJANGO_DEBUG:-1} "$$PY" manage.py migrate --noinput

lint:
	@$(VENV_PY) "$$PY" -m ruff check .

bench-ingest:  ## ingest throughput vs raw COPY vs naive DRF (gunicorn on loopback, PostgreSQL)
	@$(VENV_PY) scripts/lib/with_postgres.sh "$$PY" scripts/bench/bench_ingest.py $(ARGS)

up:  ## docker: build and start db + web + proxy (Compose v2.24+; DB_PORT=5433 also publishes the database)
	$(COMPOSE) up --build -d

down:
	$(COMPOSE) down

logs:  ## docker: follow the web service's log (db: docker compose ... logs -f db)
	$(COMPOSE) logs -f web

bench-sqlite:  ## the embedded default: API on SQLite (200,000 seeded events) vs plain SQL on raw
	@$(VENV_PY) "$$PY" scripts/bench/bench_sqlite.py $(ARGS)

bench:  ## query benchmark: API vs plain SQL on the raw table (ARGS="-n 10000000" for 10M events)
	@$(VENV_PY) scripts/lib/with_postgres.sh "$$PY" scripts/bench/bench_queries.py $(ARGS)

bench-storage:  ## bytes/event and query times before/after the columnstore (TimescaleDB; ARGS="-n 10000000")
	@$(VENV_PY) scripts/lib/with_postgres.sh "$$PY" scripts/bench/bench_storage.py $(ARGS)
bench-dashboard:  ## the dashboard's API calls for the 30-day view vs plain SQL (ARGS="-n 10000000")
	@$(VENV_PY) scripts/lib/with_postgres.sh "$$PY" scripts/bench/bench_dashboard.py $(ARGS)
bench-fresh:  ## fresh data under sustained ingest (100/1,000/10,000 events/s): query cost and refresh cost (TimescaleDB)
	@$(VENV_PY) scripts/lib/with_postgres.sh "$$PY" scripts/bench/bench_fresh.py $(ARGS)
bench-live:  ## ingest at 1,000 events/s (2% late) while the dashboard loads, policies and refresher live (ARGS="-n 10000000 --rate 1000,5000")
	@$(VENV_PY) scripts/lib/with_postgres.sh "$$PY" scripts/bench/bench_live.py $(ARGS)

seed:  ## add realistic traffic to the configured database (ARGS="--events 100000")
	@$(RUN_PY) DJANGO_DEBUG=$${DJANGO_DEBUG:-1} "$$PY" manage.py seed_requests $(ARGS)

openapi:  ## regenerate docs/openapi.yaml (the committed schema; a test checks it is current)
	@$(RUN_PY) DJANGO_DEBUG=$${DJANGO_DEBUG:-1} "$$PY" manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml
demo:  ## backend + the docs/examples apps + traffic: the dashboard fills in a minute (Ctrl-C stops all)
	@bash scripts/demo.sh
