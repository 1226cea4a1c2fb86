# The two commands of the README, plus helpers. Each target runs the idempotent set-up first.
PY := .venv/bin/python

.PHONY: setup demo test lint
setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup
	$(PY) -m pytest -q

lint: setup
	.venv/bin/ruff check .
