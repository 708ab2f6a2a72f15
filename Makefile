# The book's two commands (see README):  make book   and   make test
# Both create .venv and install the exact pins of requirements.txt plus the library on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= book
# The chapters execute JOBS at a time before the build reads them from its cache (.ci/execute.py),
# each kernel with THREADS intra-op threads: the chapters' small models are bound by per-operation
# cost, and one thread trains them about as fast as two (benchmarks/README.md).
JOBS ?= 2
THREADS ?= 1
# jupyter-cache ignores environment variables: each profile builds into its own folder.
OUT := $(if $(filter book,$(PROFILE)),.,_build/$(PROFILE))

.PHONY: install book pdf test test-execute test-colab-setup test-build test-colab-run test-unit colab unit notebooks sync bench retrain verdicts seeds clean

$(STAMP): requirements.txt lib/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -e lib
	touch $(STAMP)

install: $(STAMP)

## make book: build the HTML book (book profile) into _build/html/index.html.
##   make book PROFILE=paper  builds the paper profile into _build/paper/_build/html (needs a GPU).
book: $(STAMP)
	ICLBOOK_PROFILE=$(PROFILE) ICLBOOK_RECORDS=$(abspath $(OUT))/_build/records \
		$(BIN)/python .ci/execute.py --path-output $(OUT) --jobs $(JOBS) --threads $(THREADS)
	ICLBOOK_PROFILE=$(PROFILE) ICLBOOK_RECORDS=$(abspath $(OUT))/_build/records ICLBOOK_HTML=1 \
		$(BIN)/jupyter-book build . -W -n --keep-going --path-output $(OUT)
	@echo "The book is at $(OUT)/_build/html/index.html"

## make pdf: the book as one PDF, $(OUT)/_build/book.pdf, after make book (it reads that build's
##   execution cache): the single-page HTML build printed offline by headless Chromium with the
##   hints open and the solutions left out, then checked (pages, every chapter's title, figures).
pdf: $(STAMP)
	ICLBOOK_PROFILE=$(PROFILE) ICLBOOK_RECORDS=$(abspath $(OUT))/_build/records ICLBOOK_HTML=1 \
		$(BIN)/jupyter-book build . --builder singlehtml --path-output $(OUT)
	$(BIN)/python .ci/pdf.py $(OUT)/_build/singlehtml $(OUT)/_build/book.pdf

## make test: every test CI runs, from a clean slate: the linter and formatter check (ruff, on the
## library, tests, benchmarks, CI scripts and the chapters' code cells); a strict build of the
## book at the book profile (every chapter executed, JOBS at a time, every claim asserted); the
## built pages opened from disk in headless Chromium without a network (math typeset, local
## images, the claims tables; Debian's chromium is installed if missing); the Colab imitation
## (make colab): nbval on every paired notebook at the smoke profile, in a bare Colab-like
## environment that installs the library's wheel through each chapter's own install cell; then
## the library's unit tests, the notebook sync test, and the tests that read both builds' ledger
## records (the expected verdicts; every row against a null that does not pass; no row dropped at
## smoke). On two cores the steps overlap: the Colab-like environment installs beside the book's;
## then the chapters execute, JOBS at a time, and the unit tests take the first core they leave
## free; then the build and the Colab imitation run at once (each step's output printed whole
## when it ends); the record tests last.
test:
	rm -rf _build/test
	$(MAKE) --no-print-directory -j2 --output-sync=target $(STAMP) test-colab-setup
	$(BIN)/ruff check lib tests benchmarks .ci book/*.ipynb
	$(BIN)/ruff format --check lib tests benchmarks .ci
	$(MAKE) --no-print-directory test-execute BESIDE='$(MAKE) --no-print-directory test-unit'
	$(MAKE) --no-print-directory -j2 --output-sync=target test-build test-colab-run
	ICLBOOK_PROFILE=smoke ICLBOOK_SEED=0 ICLBOOK_RECORDS=$(CURDIR)/_build/test/records ICLBOOK_REQUIRE_RECORDS=1 \
		$(BIN)/python -m pytest tests/test_verdicts.py -p no:cacheprovider -q

# make test's steps. First, at once: the book's environment and the Colab-like one install (each
# pip install runs on one core). Then the chapters execute, JOBS at a time, and the unit tests
# take the first worker slot the chapters leave free (.ci/execute.py --beside: the last chapter
# would otherwise run alone on one core). Then, at once: the strict build reads the executed
# chapters from the cache and renders (one core), and the Colab imitation runs; last, the tests
# that read both builds' ledger records.
test-execute: $(STAMP)
	ICLBOOK_PROFILE=book ICLBOOK_CACHE=$(CURDIR)/_build/test/weights ICLBOOK_SEED=0 \
		ICLBOOK_RECORDS=$(CURDIR)/_build/test/records \
		$(BIN)/python .ci/execute.py --path-output _build/test --jobs $(JOBS) --threads $(THREADS) \
		$(if $(BESIDE),--beside "$(BESIDE)")
test-colab-setup:
	.ci/colab.sh setup
test-build: $(STAMP)
	ICLBOOK_PROFILE=book ICLBOOK_CACHE=$(CURDIR)/_build/test/weights ICLBOOK_SEED=0 \
		ICLBOOK_RECORDS=$(CURDIR)/_build/test/records ICLBOOK_HTML=1 \
		$(BIN)/jupyter-book build . -W -n --keep-going --path-output _build/test
	command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)
	$(BIN)/python .ci/offline_check.py _build/test/_build/html
test-colab-run: $(STAMP)
	ICLBOOK_PROFILE=smoke ICLBOOK_CACHE=$(CURDIR)/_build/test/weights-smoke ICLBOOK_SEED=0 \
		ICLBOOK_RECORDS=$(CURDIR)/_build/test/records JOBS=$(JOBS) THREADS=$(THREADS) .ci/colab.sh run
test-unit: $(STAMP)
	ICLBOOK_PROFILE=smoke ICLBOOK_SEED=0 ICLBOOK_CACHE=$(CURDIR)/_build/test/unit-cache \
		ICLBOOK_RECORDS=$(CURDIR)/_build/test/unit-records $(BIN)/python -m pytest tests -p no:cacheprovider \
		--ignore tests/test_verdicts.py

## make colab: the Colab imitation alone (about 2 min of set-up, then the notebooks at smoke).
colab: $(STAMP)
	ICLBOOK_PROFILE=smoke ICLBOOK_SEED=0 .ci/colab.sh

## Faster loops while writing: unit tests only, or nbval only.
unit: $(STAMP)
	$(BIN)/python -m pytest tests -q
notebooks: $(STAMP)
	ICLBOOK_PROFILE=smoke $(BIN)/python -m pytest book --nbval-lax --nbval-current-env -q

## make sync: regenerate the paired notebooks from the text chapters (the .md is the source;
## one-way, so that the .md keeps its formatting).
sync: $(STAMP)
	for f in book/[0-9][0-9]_*.md; do $(BIN)/jupytext --to ipynb --update "$$f"; done

## make bench: the timing benchmarks of benchmarks/ (ratios measured in one run).
bench: $(STAMP)
	$(BIN)/python benchmarks/ensemble.py
	$(BIN)/python benchmarks/induction.py
	$(BIN)/python benchmarks/implicit_scoring.py
	$(BIN)/python benchmarks/chapter_times.py

## make retrain: pretrain chapter 2's tiny GPT again and overwrite the shipped checkpoints
##   (lib/iclbook/implicit/weights/: tinylm.pt and its record tinylm.json with the SHA-256; then
##   the momentum study, weights/momentum/eta<eta>_seed<seed>/, 3 etas x 2 seeds x 3,000 steps),
##   then the second model of the inference world (weights/inference/, about 22 minutes on two
##   cores), the same recipe at pretraining seeds 1 and 2 (weights/inference_seeds/seed<seed>/)
##   and with momentum 0.9 at seeds 0-2 (weights/inference_momentum48/eta0.9_seed<seed>/), and
##   its momentum study at a batch of 24 rows (weights/inference_momentum/eta<eta>_seed<seed>/:
##   eta 0, 0.5 and 0.9 at seeds 0-2; about 11 minutes each on two cores).
retrain: $(STAMP)
	$(BIN)/python -m iclbook.implicit.retrain
	for seed in 1 2; do for eta in 0.0 0.5 0.9; do \
	  $(BIN)/python -m iclbook.implicit.retrain --steps 3000 --seed $$seed --momentum $$eta --save-every 500 \
	    --out lib/iclbook/implicit/weights/momentum/eta$${eta}_seed$${seed} || exit 1; done; done
	$(BIN)/python -m iclbook.implicit.retrain --world inference
	for seed in 1 2; do $(BIN)/python -m iclbook.implicit.retrain --world inference --seed $$seed \
	    --out lib/iclbook/implicit/weights/inference_seeds/seed$$seed || exit 1; done
	for seed in 0 1 2; do $(BIN)/python -m iclbook.implicit.retrain --world inference --seed $$seed --momentum 0.9 \
	    --out lib/iclbook/implicit/weights/inference_momentum48/eta0.9_seed$$seed || exit 1; done
	for run in 0.9:0 0.9:1 0.9:2 0.5:0 0.5:1 0.5:2 0.0:0 0.0:1 0.0:2; do eta=$${run%:*}; seed=$${run#*:}; \
	  $(BIN)/python -m iclbook.implicit.retrain --world inference --seed $$seed --momentum $$eta --set batch=24 \
	    --out lib/iclbook/implicit/weights/inference_momentum/eta$${eta}_seed$${seed} || exit 1; done

## make verdicts: after a book-profile build at seed 0 (make test or make book), rewrite the
##   committed expected verdicts (tests/verdicts-book.json), printing what changed. Commit it with
##   the reason for every changed verdict in the commit message.
RECORDS ?= _build/test/records
verdicts: $(STAMP)
	$(BIN)/python -m iclbook.records verdicts --records $(RECORDS) --out tests/verdicts-book.json

## make seeds: every chapter at the book profile over SEEDS seeds (default 5; about 40 minutes on
##   two CPU cores, JOBS chapters at a time), merged into book/records/seeds-book.json (one entry
##   per chapter; no chapter is dropped), which the claims page shows.
SEEDS ?= 5
seeds: $(STAMP)
	$(BIN)/python benchmarks/seeds.py --seeds $(SEEDS) --jobs $(JOBS) --threads $(THREADS)

clean:
	rm -rf _build
