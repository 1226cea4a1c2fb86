# The two commands of the README, plus helpers. Each target runs the idempotent set-up first.
PY := .venv/bin/python

.PHONY: setup demo test lint
setup:
	@scripts/setup.sh

# The whole demo through the REST service: embedded Ray + MLflow + API, teacher, students.
demo: setup
	$(PY) -m service.demo

# pytest exits 5 when it collected no test: a broken suite, reported as such.
test: setup
	@$(PY) -m pytest -q --durations=10 || { rc=$$?; [ $$rc -eq 5 ] && echo "make test: pytest collected no tests" >&2; exit $$rc; }

lint: setup
	.venv/bin/ruff check .
