# The two commands a newcomer runs (see README): `make demo` and `make test`.
# Setup runs once and again only when pyproject.toml or scripts/setup.sh change (the stamp records it);
# `make setup-force` reruns it.
PY ?= python3
STAMP := .setup-stamp

.PHONY: setup setup-force demo test test-fast bench

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	@touch $(STAMP)

setup-force:
	bash scripts/setup.sh
	@touch $(STAMP)

demo: setup
	bash scripts/demo.sh runs/demo

test: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -x -m "not slow"
