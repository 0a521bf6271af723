# Two commands: `make paper` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= default
RUN    ?= runs/$(PROFILE)

.PHONY: paper test lab bench model clean-runs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Run notebooks 01-08 headless on the default profile, then copy figures and tables.
paper: $(STAMP)
	$(BIN)/liverlib run --profile $(PROFILE) --out $(RUN)
	$(BIN)/python -m liverlib.publish $(RUN) figures

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Open the notebooks in JupyterLab (installs the `lab` extra once).
lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,lab]'
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/liverlib bench --out bench.json

# Retrain the model pair shipped in the package (liverlib/pretrained) on the whole default cohort.
model: $(STAMP)
	$(BIN)/python -m liverlib.training.packaged

clean-runs:
	rm -rf runs/
