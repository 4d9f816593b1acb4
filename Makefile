# Every target installs what it needs into .venv first (Python 3.11 + pip is all a machine needs).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast bench bench-gpu ui clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,deploy]'
	touch $(STAMP)

demo: $(STAMP)  ## convert the shipped example clip end to end and print where the result is
	$(VENV)/bin/stereospot convert examples/cockatoo.mp4

test: $(STAMP)  ## the whole test suite (what CI runs)
	$(VENV)/bin/pytest -q -p no:cacheprovider --show-capture=no

test-fast: $(STAMP)  ## everything but the slow live-server scenarios
	$(VENV)/bin/pytest -q -p no:cacheprovider --show-capture=no -m "not slow"

bench: $(STAMP)  ## speed and quality benchmarks; machine-readable results in .bench/
	$(PY) benchmarks/pipeline_speed.py --out .bench/pipeline_speed.json
	$(PY) benchmarks/long_video.py --minutes 1 10 --engine --out .bench/long_video.json
	$(PY) benchmarks/warp_quality.py --out .bench/warp_quality.json
	$(PY) benchmarks/depth_quality.py --out .bench/depth_quality.json
	$(PY) benchmarks/output_codecs.py --out .bench/output_codecs.json

bench-gpu: $(STAMP)  ## Depth Anything V2 Small (random weights) end to end at 1080p on the GPU
	$(PY) benchmarks/learned_depth_speed.py --out .bench/learned_depth_speed.json

ui: $(STAMP)  ## Dagster UI + daemon on http://127.0.0.1:3000
	$(VENV)/bin/stereospot ui

clean:
	rm -rf $(VENV) .stereospot .bench
