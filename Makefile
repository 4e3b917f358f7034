# The README's two commands are `make demo` and `make test`; `make install` is their shared first step.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install install-test demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned by constraints.txt, so nothing that depends on it can pull a CUDA build.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e .
	touch $(STAMP)

install: $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) install -c constraints.txt -e '.[test,ray,bench]'
	touch $(TEST_STAMP)

install-test: $(TEST_STAMP)

demo: install
	$(VENV)/bin/embedlens demo

test: install-test
	$(PY) -m pytest tests

bench: install-test
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build src/*.egg-info
