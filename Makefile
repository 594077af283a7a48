# Two commands do all the set-up on a fresh machine:
#   make course   runs the whole course (PROFILE=auto|gpu|lowvram|cpu|smoke, DATASET=spec, ONLY=01,03,
#                 PARAMS="epochs=5 batch_size=64" for the notebooks' parameters, SEEDS=43,44: the
#                 extra seeds notebook 02 is repeated with, for 05's seed spread; SEEDS= for none)
#   make test     runs the unit tests (with coverage) and the notebooks under nbval
# Both create .venv from requirements.txt first if it is missing or out of date.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= auto
DATASET ?=
ONLY    ?=
PARAMS  ?=
SEEDS   ?= 43,44
KERNEL_NAME ?= cnn-course
NBVAL_FLAGS := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

.PHONY: help venv course test unit nbval lab notebooks lint bench tensorboard demo clean-outputs clean-data

help:
	@echo "make course   run every notebook (PROFILE=$(PROFILE) DATASET=$(DATASET) ONLY=$(ONLY) PARAMS=\"$(PARAMS)\")"
	@echo "make test     unit tests + nbval notebook regression tests"
	@echo "make lab      open JupyterLab with the '$(KERNEL_NAME)' kernel"
	@echo "make notebooks  rebuild notebooks/*.ipynb from notebooks/src and store smoke outputs"
	@echo "make lint     ruff;  make bench  print the benchmarks;  make tensorboard  training curves"
	@echo "make demo MODEL=outputs/models/<run id>   a web page that classifies your photos"

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

venv: $(VENV)/.installed

course: venv
	$(PY) -m nbutils.run --profile $(PROFILE) $(if $(DATASET),--dataset $(DATASET)) $(if $(ONLY),--only $(ONLY)) $(foreach p,$(PARAMS),-p $(p)) $(if $(SEEDS),--seeds $(SEEDS))

test: unit nbval

unit: venv
	$(PY) -m pytest tests --cov=nbutils --cov-report=term --cov-fail-under=80 -q

nbval: venv
	NBUTILS_PROFILE=smoke $(PY) -m pytest $(NBVAL_FLAGS) notebooks/ -q

lab: venv
	$(PY) -m ipykernel install --user --name $(KERNEL_NAME) --display-name "Python (CNN course)"
	$(VENV)/bin/jupyter lab notebooks/

notebooks: venv
	$(PY) tools/build_notebooks.py
	cd notebooks && for nb in [0-9][0-9]*_*.ipynb; do \
		NBUTILS_PROFILE=smoke ../$(PY) -m jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.kernel_name=python3 $$nb || exit 1; \
	done

lint: venv
	$(VENV)/bin/ruff check nbutils tests tools solutions

bench: venv
	$(PY) -m nbutils.bench torch
	$(PY) -m nbutils.bench keras
	$(PY) -m nbutils.bench hf

tensorboard: venv
	$(VENV)/bin/tensorboard --logdir outputs/tensorboard

MODEL ?=
demo: venv
	@test -n "$(MODEL)" || { echo "Say which model: make demo MODEL=outputs/models/<run id> (ls outputs/models)"; exit 2; }
	$(PY) -m nbutils.demo $(MODEL)

clean-outputs:
	rm -rf outputs/metrics outputs/figures outputs/predictions outputs/notebooks outputs/models \
		outputs/checkpoints outputs/logs outputs/tensorboard outputs/comparison \
		outputs/comparison-smoke outputs/gradcam outputs/demo_examples

clean-data:
	rm -rf data/processed
