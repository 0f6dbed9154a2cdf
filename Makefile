# The two commands a newcomer runs (see README): `make demo` and `make test`.
PY ?= python3

.PHONY: setup demo test test-fast bench

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh runs/demo

test: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -p no:cacheprovider

test-fast:
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -x -m "not slow"
