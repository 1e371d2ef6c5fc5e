# Set-up lives here: `make run` and `make test` work on a fresh clone (Python 3.11, no GPU needed).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench clean image-test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,ray,slurm,elpv,anomalib]"
	touch $(STAMP)

install: $(STAMP)

run: install  ## the embedded default: procedural dataset, preset offline, every registered method, k=4, 3 seeds
	$(PY) -m submission run --shots 4

test: install  ## the test suite (offline: the hub is never contacted)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

bench: install  ## time the default run and write BENCHMARKS.md figures
	HF_HUB_OFFLINE=1 $(PY) -m bench.default_run

clean:
	rm -rf $(VENV) runs dist

image-test:  ## build the Dockerfile with podman on a debootstrapped base, run it, build and evaluate a bundle image (downloads a CUDA torch; not in CI)
	bash bench/image_test.sh
