# Two entry points: `make demo` (the main job on the embedded model) and `make test`; `make lab`
# opens the notebooks in JupyterLab. Each creates .venv on first use, installing the CPU torch pin
# before anything else so no dependency pulls a multi-GB CUDA build.
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

$(VENV)/.installed: pyproject.toml setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,notebook]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/steerscope info
	$(VENV)/bin/steerscope run steer-demo --out $(OUT)

test: $(VENV)/.installed browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# tests/test_report_browser.py opens reports in headless Chromium: installed here with apt where
# missing (as root or through sudo); if that fails, only that test fails, saying so. `demo` needs none.
browser:
	@command -v chromium >/dev/null || { \
		echo "chromium not found: installing it with apt-get for the headless browser test"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		{ $$sudo apt-get update -qq && $$sudo apt-get install -y -qq chromium >/dev/null; } \
			|| echo "could not install chromium (apt-get failed): tests/test_report_browser.py will fail"; }

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

.PHONY: demo test lab browser
