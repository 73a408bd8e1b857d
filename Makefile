# The two entry points README.md opens with. Both set up .venv themselves on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup demo test clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,train,eval]'
	# openpi's robot client, for the policy server's tests: --no-deps, see pyproject's test extra
	$(VENV)/bin/pip install --quiet --no-deps 'openpi-client==0.1.2'
	touch $(STAMP)

setup: $(STAMP)

# The whole pipeline on built-in sample data, offline, with tiny random-weight models (flows/demo.py).
demo: $(STAMP)
	rm -rf demo-output
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/vlaforge demo --output demo-output

test: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/pytest -q

clean-demo:
	rm -rf demo-output
