# Two commands for a fresh machine: `make demo` (the pack end to end against the
# loopback emulators, on Python 3.8 for the real orquesta conductor) and `make test`.
# Everything below sets itself up: pinned virtualenvs per interpreter under .venv/,
# rebuilt when a requirements or constraints file changes.

SHELL := /bin/bash
PYTHONS := py38 py311
VENV := .venv
PYTEST_ARGS ?=

# Find an interpreter: on PATH first, then under pyenv (whose shims refuse
# versions that are not selected), then the usual install prefixes.
find_python = $(firstword $(foreach c,\
	$(shell command -v python$(1) 2>/dev/null) \
	$(wildcard $(HOME)/.pyenv/versions/$(1).*/bin/python$(1)) \
	$(wildcard /usr/local/bin/python$(1) /usr/bin/python$(1)),\
	$(if $(shell $(c) -c 'import sys; print(sys.version_info[:2] == tuple(map(int, "$(1)".split("."))))' 2>/dev/null | grep -x True),$(c))))

PYTHON_py38 := $(call find_python,3.8)
PYTHON_py311 := $(call find_python,3.11)

.PHONY: demo test bench venvs clean $(addprefix test-,$(PYTHONS))

demo: $(VENV)/py38/.installed
	$(VENV)/py38/bin/python -m demo

test: $(addprefix test-,$(PYTHONS))
	@echo "make test: the suite passed on Python 3.8 and 3.11"

$(addprefix test-,$(PYTHONS)): test-%: $(VENV)/%/.installed
	@echo "=== tests on $* ($$($(VENV)/$*/bin/python --version)) ==="
	# as st2-run-pack-tests -x -j runs a pack's tests: pytest from the pack root, PYTHONPATH
	# holding actions/, actions/lib/ and sensors/
	PYTHONPATH=actions:actions/lib:sensors $(VENV)/$*/bin/python -m pytest -p no:cacheprovider -q $(PYTEST_ARGS) tests

# Benchmarks (issue 14; bench/README.md): ratios side by side with the peers, never a test.
# tcex, the peer of the indicator bench, gets its own Python 3.11 virtualenv.
BENCH_REPEAT ?= 3
bench: $(VENV)/py38/.installed $(VENV)/py311/.installed $(VENV)/tcex/.installed
	@echo "=== P2 indicators on py311 (A pack, the fair floor, B tcex) ==="
	PYTHONPATH=. $(VENV)/py311/bin/python bench/bench_indicators.py --repeat $(BENCH_REPEAT)
	@echo "=== P2 indicators on py38 (A pack, the fair floor) ==="
	PYTHONPATH=. $(VENV)/py38/bin/python bench/bench_indicators.py --no-tcex --no-complete --repeat $(BENCH_REPEAT)
	@echo "=== P2 the 16 MB StackStorm document ceiling ==="
	PYTHONPATH=. $(VENV)/py311/bin/python bench/bench_ceiling.py
	@echo "=== P1 queue drain on py311 ==="
	PYTHONPATH=. $(VENV)/py311/bin/python bench/bench_queue.py --repeat $(BENCH_REPEAT)
	@echo "=== P3 end to end on py38 (orquesta) ==="
	PYTHONPATH=. $(VENV)/py38/bin/python bench/bench_e2e.py --repeat $(BENCH_REPEAT)

$(VENV)/tcex/.installed: bench/requirements-tcex.txt
	@if [ -z "$(PYTHON_py311)" ]; then echo "make: no Python 3.11 found for tcex's virtualenv." >&2; exit 2; fi
	rm -rf $(VENV)/tcex
	$(PYTHON_py311) -m venv $(VENV)/tcex
	$(VENV)/tcex/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements-tcex.txt
	touch $@

venvs: $(addprefix $(VENV)/,$(addsuffix /.installed,$(PYTHONS)))

$(VENV)/%/.installed: requirements.txt requirements-tests.txt tests/requirements-conductor.txt tests/requirements-odm.txt tests/constraints/%.txt
	@if [ -z "$(PYTHON_$*)" ]; then \
		echo "make: no Python interpreter for $* found (looked on PATH and under ~/.pyenv/versions)." >&2; \
		echo "      Install it (e.g. 'pyenv install 3.8' / 'pyenv install 3.11') or pass PYTHON_$*=/path/to/python." >&2; \
		exit 2; fi
	rm -rf $(VENV)/$*
	$(PYTHON_$*) -m venv $(VENV)/$*
	$(VENV)/$*/bin/python -m pip install --quiet --disable-pip-version-check \
		-r requirements-tests.txt -r tests/requirements-conductor.txt -c tests/constraints/$*.txt
	$(VENV)/$*/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r tests/requirements-odm.txt -c tests/constraints/$*.txt
	touch $@

clean:
	rm -rf $(VENV)
