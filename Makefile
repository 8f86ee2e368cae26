# engagement-monitor: everyday commands. Ports and state folder come from the
# environment (see README: KAFKA_PORT, REDIS_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT,
# KAFKA_CONTROLLER_PORT, EM_STATE_DIR).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STACK := deploy/local/stack
LINT_PATHS := streams agents commands tests grafana bench deploy/local/emstack deploy/prometheus/rules_gen.py

.PHONY: venv demo demo-drop test up down reset status logs lint constraints

# The venv is (re)installed when missing or when pyproject.toml/constraints.txt change.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The whole pipeline live: stack, a worker, the simulator, a refreshing table.
# DEMO_SECONDS=N bounds it; Ctrl-C stops the worker and simulator (`make down`: the stack).
demo: venv
	$(STACK) up
	$(VENV)/bin/engagement-monitor demo

# The alerting demo (docs/alerting.md): fast alert rules, 8 communities of flat traffic,
# DEMO_DROP's traffic falls to 2 % after 90s; the alerts arriving at the alerts-webhook
# receiver (127.0.0.1:9099) show under the live table. Stops after DEMO_SECONDS.
DEMO_DROP ?= brand-02:0.02@90s
demo-drop: venv
	$(STACK) up
	DEMO_SECONDS=$${DEMO_SECONDS:-240} $(VENV)/bin/engagement-monitor demo --alerts \
		--communities 8 --drop $(DEMO_DROP)

test: venv
	$(STACK) up
	$(VENV)/bin/pytest

up: venv
	$(STACK) up

down:
	$(STACK) down

# A full local reset: the stack stopped, its state folder deleted (topics, consumer
# offsets, Prometheus data, logs) and the table stores in the worker's data folder
# (EM_DATA_DIR, as the worker resolves it). Stop the workers first; `make up` then
# starts from nothing.
reset: venv
	$(STACK) down
	rm -rf "$${EM_STATE_DIR:-.state}"
	datadir=$$($(VENV)/bin/python -c 'from streams.settings import from_env; print(from_env().datadir)') \
		&& echo "removing the worker's table stores: $$datadir/v*/tables" \
		&& rm -rf "$$datadir"/v*/tables

status:
	$(STACK) status

logs:
	$(STACK) logs

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(LINT_PATHS)

# Pin what the venv has now, so a fresh machine installs exactly the tested versions.
constraints:
	$(VENV)/bin/pip freeze --exclude-editable > constraints.txt
