# `make demo` and `make test` do their own set-up: a virtualenv in .venv with pinned packages.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# DVC runs stage commands through the shell: let them find this environment's python.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install demo test test-slow reproduce lint clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(STAMP)  ## the virtualenv alone

demo: $(STAMP)  ## run the whole pipeline offline on the digits data, in build/demo
	$(PYTHON) -m cifar_study.tooling.demo

test: $(STAMP)  ## the default test suite (minutes on 2 CPU cores)
	@# pytest exits 5 when it collected nothing: a suite that ran no test has not passed.
	$(PYTHON) -m pytest -q || { rc=$$?; [ $$rc -ne 5 ] || echo "no tests were collected" >&2; exit $$rc; }

test-slow: $(STAMP)  ## the slow end-to-end tests only, a process per CPU, the ten slowest timed
	@# Each file's tests stay in one process (--dist loadfile): their shared workspaces are built once.
	@# One torch thread per process: at torch's default, two processes' threads contended for two
	@# cores (19 tests in 24 min, against 21 min for 18 of them in one process); with one, 16 min.
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -m slow -n logical --dist loadfile --durations=10 || { rc=$$?; [ $$rc -ne 5 ] || echo "no tests were collected" >&2; exit $$rc; }

reproduce: $(STAMP)  ## CI's check: re-run the pipeline, compare with .ci/expected (CIFAR10_SOURCE)
	.ci/reproduce

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build .pytest_cache .ruff_cache
