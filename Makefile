# Two targets a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the default sweep on the built-in synthetic corpus and print the leaderboard.
demo: $(STAMP)
	$(PY) sweep.py search_spaces/transformer.yaml

## Lint and run the default (fast) test suite: under 10 minutes on 2 cores. Two pytest-xdist
## workers (each test a unit, `worksteal`); the slow tests run one at a time (clusters, kills).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist worksteal

## The tests marked slow (kill-and-resume, multi-node, long training).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]  # 5 = no slow tests collected

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) results .cache
