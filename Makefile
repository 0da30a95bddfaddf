# make submit: set up .venv, make the built-in synthetic data set, train two small joint runs,
#              search the blend of them (with and without mirrored det/seg) on val, write and score
#              submissions of each run and of the searched blend.
# make test:   set up .venv if needed, run the tests.
# make bench:  the whole loop on the real traffic benchmark (fine-tuned from ../shared/weights), about 90 minutes cold
#              on 2 CPU cores; writes bench/REPORT.md and bench/report.html. Reuses finished runs.
PYTHON ?= python3
VENV := .venv
WB := $(VENV)/bin/mtwb
SYNTH := data/synth
DATA := $(SYNTH)/dataset.yaml
# Each run trains EPOCHS epochs; sizes per task (multiples of 32).
EPOCHS ?= 12
SIZES ?= cls=32,det=128,seg=128
MEMBERS = synth-resnet10t synth-resnet14t synth-resnet10t@hflip@det+seg synth-resnet14t@hflip@det+seg
BENCH_DATA ?= ../shared/data/traffic/dataset.yaml
WEIGHTS ?= ../shared/weights
TRAIN = $(WB) train joint --data $(DATA) --epochs $(EPOCHS) --img-size $(SIZES) --overwrite

.PHONY: submit test bench venv data clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

data: $(DATA)

$(DATA): $(VENV)/.installed workbench/data/synth.py
	$(WB) data synth $(SYNTH) --seed 0

submit: $(VENV)/.installed $(DATA)
	$(TRAIN) --backbone resnet10t --name synth-resnet10t
	$(TRAIN) --backbone resnet14t --name synth-resnet14t
	$(WB) submit synth-resnet10t --data $(DATA) --name synth-resnet10t
	$(WB) submit synth-resnet14t --data $(DATA) --name synth-resnet14t
	$(WB) ensemble search $(MEMBERS) --data $(DATA) --out ensembles/synth.yaml
	$(WB) submit ensembles/synth.yaml --data $(DATA) --name synth-blend
	$(WB) score submissions/synth-resnet10t submissions/synth-resnet14t submissions/synth-blend --data $(DATA)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/run.py --data $(BENCH_DATA) --weights $(WEIGHTS)

clean:
	rm -rf $(SYNTH) runs/synth-* submissions/synth-* ensembles/synth.yaml
