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

# `make test` runs in timed phases, so a slow step shows: install (once), the embedded model's build
# (dequantising the GGUF into the cache, once), the organisms (their committed weights verified;
# nothing is trained) and the tests; a table of the phases' wall times ends the output.
ORGANISMS := organism:tom organism:sources organism:length organism:reasoning
test:
	@python3 .ci/phases.py \
		"install=$(MAKE) --no-print-directory $(VENV)/.installed" \
		"model build=HF_HUB_OFFLINE=1 $(VENV)/bin/steerscope info" \
		"organisms=HF_HUB_OFFLINE=1 $(VENV)/bin/steerscope build $(ORGANISMS)" \
		"tests=HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=30"

lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab notebooks/

.PHONY: demo test lab
