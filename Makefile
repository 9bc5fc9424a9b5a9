# The two commands a new user needs: `make run` serves the app, `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# The suite runs against the real services; these point at the local ones unless overridden.
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/app
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint format worker beat migrate venv clean bench

# Reinstall only when a requirements file changed.
$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

migrate: venv
	$(BIN)/python manage.py migrate --noinput

run: migrate
	$(BIN)/python manage.py bootstrap_admin
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

worker: venv
	$(BIN)/celery -A config worker --loglevel=INFO

# The periodic clean-ups (CELERY_BEAT_SCHEDULE in config/settings.py): run exactly one beat per deployment.
beat: venv
	$(BIN)/celery -A config beat --loglevel=INFO

test: venv
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) FAST_PATH_CHECK_BODIES=true $(BIN)/pytest $(PYTEST_ARGS)

# The project against the FastAPI peer (bench/bench.py): about 6 minutes, writes bench/RESULTS.md.
# BENCH_ARGS="--large" for 200,000 posts, "--workers 2", "--no-write", ...
bench: venv
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache
