# The two commands of the README: `make demo` (the quick benchmark suite, ending with
# its results table) and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Without a GPU, install the CPU build of torch first: a plain `torch` requirement
# pulls a multi-GB CUDA build. Override with `make TORCH=... test`.
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
TORCH ?= torch==2.13.0
else
TORCH ?= torch
endif

.PHONY: demo test lint install browser clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[mujoco,atari,offline,lm,dev,ray]"
	touch $@

demo: install
	$(BIN)/prefbench run quick --out runs/quick

test: install browser
	$(BIN)/python -m pytest -q tests

# The labelling page's tests drive a real browser. Playwright cannot download one here,
# so use Debian's chromium: installed as root when missing; otherwise those tests skip.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			>/dev/null) || echo "chromium could not be installed: browser tests will skip"; \
	else echo "no chromium and not root: browser tests will skip"; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
