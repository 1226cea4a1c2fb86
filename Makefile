# The two commands of the README, plus helpers. Each target runs the idempotent set-up first.
PY := .venv/bin/python

.PHONY: setup demo test lint bench reproduce
setup:
	@scripts/setup.sh

# The whole demo through the REST service: embedded Ray + MLflow + API, teacher, students.
demo: setup
	$(PY) -m service.client.demo

# pytest exits 5 when it collected no test: a broken suite, reported as such. The benchmark and
# reproduction scripts' smoke tests (marker `bench`) run in `make bench` and `make reproduce`.
test: setup
	@$(PY) -m pytest -q --durations=10 -m "not bench" || { rc=$$?; [ $$rc -eq 5 ] && echo "make test: pytest collected no tests" >&2; exit $$rc; }

lint: setup
	.venv/bin/ruff check .

# The scripts' smoke tests (4-7 min), every benchmark (10-15 min on a quiet 2-core machine), then the
# docs' tables from the JSON they wrote.
bench: setup
	$(PY) -m pytest -q -m bench tests/benchmarks
	$(PY) benchmarks/bench_losses.py
	$(PY) benchmarks/bench_step.py
	$(PY) benchmarks/bench_ray.py
	$(PY) benchmarks/bench_service.py
	$(PY) benchmarks/tables.py

# The scripts' smoke tests, the method comparison through the REST service (estimate 5.0 h on 2
# cores, resumable), then the docs.
reproduce: setup
	$(PY) -m pytest -q -m bench tests/benchmarks
	$(PY) benchmarks/reproduce.py; rc=$$?; $(PY) benchmarks/tables.py && exit $$rc
