# The README's two commands are `make demo` and `make test`; `make install` is their shared first step.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install install-test demo test bench bench-app clean frontend browser

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned by constraints.txt, so nothing that depends on it can pull a CUDA build.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e .
	touch $(STAMP)

# The app's page (TypeScript, Vite) is built into the package when node and npm are here; without them
# the app serves its API and a page that says how to build it.
APP_STATIC := src/embedlens/app/static/index.html
FRONTEND_SRC := $(wildcard frontend/src/*) frontend/index.html frontend/package.json frontend/package-lock.json \
	frontend/vite.config.ts frontend/tsconfig.json

$(APP_STATIC): $(FRONTEND_SRC)
	@if command -v npm >/dev/null 2>&1; then \
		cd frontend && npm ci --no-audit --no-fund && npm run build; \
	else \
		echo "npm not found: the app's page is not built (the API still works)"; \
	fi

frontend: $(APP_STATIC)

install: $(STAMP) frontend

$(TEST_STAMP): $(STAMP)
	$(PIP) install -c constraints.txt -e '.[test,ray,bench]'
	touch $(TEST_STAMP)

install-test: $(TEST_STAMP)

# `make demo DEMO_ARGS=` runs the steps without then serving the app.
DEMO_ARGS ?= --app
demo: install
	$(VENV)/bin/embedlens demo $(DEMO_ARGS)

# The browser tests drive Debian's chromium (never a downloaded browser).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

test: install-test frontend browser
	$(PY) -m pytest tests

bench: install-test
	$(PY) bench/run_all.py

# The app side by side with Embedding Atlas 0.22, installed in its own virtualenv (.venv-atlas; its pins are
# not ours), and images in the plot against plain dots.
bench-app: install-test frontend browser
	bash bench/atlas_env.sh
	$(PY) bench/bench_app.py --cases main,thumbnails,atlas --runs 3

clean:
	rm -rf $(VENV) build src/*.egg-info src/embedlens/app/static frontend/node_modules
