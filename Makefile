# The two commands a user needs:  make demo   and   make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-unit test-stack lint bench setup clean stack stack-down stack-status

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m devstack.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every tier: unit (no service), integration (Spark, S3, MLflow), airflow (dag.test, real scheduler);
# then the team stack (tests/stack: Celery, MLflow server, Spark standalone) in its own run.
test: lint
	$(PY) -m pytest --ignore=tests/stack $(PYTEST_ARGS)
	$(MAKE) test-stack

test-stack: $(STAMP)
	$(PY) -m pytest tests/stack $(PYTEST_ARGS)

# The team deployment without Docker (devstack/stack.py; state in .stack/, docs/deploy.md).
stack: $(STAMP)
	$(PY) -m devstack.stack up

stack-down: $(STAMP)
	$(PY) -m devstack.stack down

stack-status: $(STAMP)
	$(PY) -m devstack.stack status

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf workspace .pytest_cache .demo
