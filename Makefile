# make demo: set up .venv (and ffmpeg, fluidsynth) if needed, then run every stage on generated demo audio.
# make test: set up the same way (and headless Chromium for the report's test), then run the test suite
#   (.ci/run calls this).
# make experiment-sampled: also install two General MIDI soundfonts, then run `semisep experiment` on
#   songs played by sampled instruments and voices (configs/experiment-sampled.yaml: 3 arms x 3 seeds trained
#   until each stops on its own, 21 min 51 s on 2 cores on 2026-12-08, beside a test run).
# make experiment-sampled-mixtures: the same corpus without unpaired solo recordings (a team with
#   finished songs only), self-training with the settings chosen on its validation songs (3 arms x 3 seeds
#   and the round-1 students to convergence: 1 h 36 min on 2 cores on 2026-12-08, partly beside a test run).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT     := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

# mixtures only: no unpaired solo roles; the teacher's mask blended with REPET-SIM's and scaled at the
# weight and scale validation prefers, its stems remixed, half of each student batch pseudo-labelled,
# two rounds (chosen on the validation songs: docs/results.md)
MIXTURES_ONLY := --set "experiment.unpaired_roles=[mixture]" \
  --set "experiment.arms=[supervised, supervised+remix, self-training+remix]" \
  --set "pseudo.repet_weights=[0, 0.25, 0.5, 0.75, 1]" --set "pseudo.vocal_scales=[1, 0.85, 0.7]" \
  --set train.pseudo_remix=true \
  --set experiment.pseudo=0.5 --set pseudo.rounds=2

.PHONY: demo test setup soundfonts browser experiment-sampled experiment-sampled-mixtures clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v ffmpeg >/dev/null 2>&1 && command -v fluidsynth >/dev/null 2>&1 || { echo "installing ffmpeg, fluidsynth (apt)"; \
	  $(SUDO) apt-get update -qq && $(APT) ffmpeg fluidsynth >/dev/null; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

soundfonts:
	@test -f /usr/share/sounds/sf2/FluidR3_GM.sf2 && test -f /usr/share/sounds/sf3/MuseScore_General.sf3 || { \
	  echo "installing the FluidR3 and MuseScore General soundfonts (apt, ~200 MB)"; \
	  $(SUDO) apt-get update -qq && $(APT) fluid-soundfont-gm musescore-general-soundfont >/dev/null; }

# the tests open the demo's report.html in a real browser (headless Chromium from Debian's packages)
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (apt, for the report's browser test)"; \
	  $(SUDO) apt-get update -qq && $(APT) chromium >/dev/null; }

demo: $(STAMP)
	$(VENV)/bin/semisep demo --config configs/demo.yaml

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest -q

experiment-sampled: $(STAMP) soundfonts
	$(VENV)/bin/semisep experiment --config configs/experiment-sampled.yaml

experiment-sampled-mixtures: $(STAMP) soundfonts
	$(VENV)/bin/semisep experiment --config configs/experiment-sampled.yaml \
	  --set experiment.name=sampled-mixtures-only $(MIXTURES_ONLY)

clean:
	rm -rf work work-experiment work-sampled .pytest_cache
