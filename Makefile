# Two entry points that work on a fresh machine, in either order:
#   make demo   runs the main job on the bundled data
#   make test   runs the test suite
# Both create .venv (if missing) and install the package into it; the second
# time the install step is skipped unless setup.py changed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.t5x_lite-installed
PYTEST_ARGS ?=
# XLA compiles single-threaded, and the tests compile a lot: two workers overlap the compiles (the suite took
# 14.5 instead of 21 min on 2 cores); --dist loadfile keeps a file's module fixtures in one worker.
TEST_WORKERS ?= 2

.PHONY: demo test install clean-venv

install: $(STAMP)

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing t5x_lite and its test dependencies into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "is ignored: it is neither" || true
	@$(PY) -c "import t5x_lite, jax, flax, torch, transformers" || (echo "install failed"; exit 1)
	@touch $@

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest tests -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
