# The README's commands: `make demo` and `make test` (both set up .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.molfree-installed
# CPU build of torch for machines without CUDA; GPU users: see README "GPU install".
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/molfree demo --out runs/demo
	$(PY) benchmarks/neighbors.py --quick | tee runs/demo/neighbors-benchmark.txt
	@echo "demo results: $(CURDIR)/runs/demo (report.md, metrics.json, ramachandran.png, neighbors-benchmark.txt)"

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest

# A real single-node SLURM (munge + slurmctld + slurmd; installs slurm-wlm/munge with apt if missing; needs root).
.PHONY: test-hpc
test-hpc: setup
	tests/hpc/start-slurm.sh
	$(PY) -m pytest tests/hpc -m "" -v

# mace-torch pins its own e3nn, so the MACE anchor lives in its own venv.
MACE_VENV := .venv-mace
$(MACE_VENV)/.installed:
	$(PYTHON) -m venv $(MACE_VENV)
	$(MACE_VENV)/bin/pip install --quiet "$(TORCH_SPEC)" mace-torch==0.3.16
	touch $@

bench: setup $(MACE_VENV)/.installed
	$(PY) benchmarks/neighbors.py
	$(PY) benchmarks/potentials.py --max-atoms 4000
	$(PY) benchmarks/bg_alanine.py --quick
	$(PY) benchmarks/hydration.py --quick
	$(PY) benchmarks/lj_insertion.py --quick
	$(PY) benchmarks/adjoint_sampling.py --quick
	$(PY) benchmarks/conformers.py --quick
	$(PY) benchmarks/crystals.py --quick
	$(PY) benchmarks/campaign.py

clean:
	rm -rf $(VENV) $(MACE_VENV) runs .pytest_cache
