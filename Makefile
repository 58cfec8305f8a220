# make demo: set up .venv (and ffmpeg) if needed, then run every stage on generated demo audio.
# make test: set up the same way, then run the test suite (.ci/run calls this).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v ffmpeg >/dev/null 2>&1 || { echo "installing ffmpeg (apt)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/semisep demo --config configs/demo.yaml

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf work .pytest_cache
