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

.PHONY: demo test venvs clean $(addprefix test-,$(PYTHONS))

demo: $(VENV)/py38/.installed
	$(VENV)/py38/bin/python -m demo

test: $(addprefix test-,$(PYTHONS))
	@echo "make test: the suite passed on Python 3.8 and 3.11"

$(addprefix test-,$(PYTHONS)): test-%: $(VENV)/%/.installed
	@echo "=== tests on $* ($$($(VENV)/$*/bin/python --version)) ==="
	# as st2-run-pack-tests -x -j runs a pack's tests: pytest from the pack root, PYTHONPATH
	# holding actions/, actions/lib/ and sensors/
	PYTHONPATH=actions:actions/lib:sensors $(VENV)/$*/bin/python -m pytest -p no:cacheprovider -q $(PYTEST_ARGS) tests

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
