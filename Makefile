# The two commands of the README:  make bench  and  make test.
# Both create the virtual environment they need (.venv) on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
FMNIST := /usr/share/datasets/fashion-mnist
LINTED := src tests $(wildcard benchmarks examples)

.PHONY: bench test lint venv data docs clean results results-auto results-pages results-long \
	results-long-page results-papers

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# the CPU build first, pinned, so nothing below pulls a CUDA build
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[bench,test,peers,ecosystem,docs]"
	touch $@

venv: $(VENV)/.stamp

# Fashion-MNIST for the tests and benchmarks: Debian's dataset-fashion-mnist when we may
# install it; otherwise the loader downloads it into its cache on first use.
data:
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will download or skip"; \
	fi

bench: venv
	$(VENV)/bin/lrfree bench

# docs/results.md (and its plots in docs/results/) from one `lrfree bench --suite full` run on
# this machine: every task, 3 seeds, two runs at once. Its records go to a tracked folder,
# benchmarks/out/full-suite/, so a run longer than a sitting is committed as it goes: the same
# command, restarted (even on another machine), trains only the runs that are missing. LW's
# default curvature pass on every step makes the 3-seed suite take hours on 2 cores
# (`lrfree bench --suite full --estimate` prints the plan; its LW costs predate that default).
results: venv data
	$(VENV)/bin/lrfree bench --suite full --out benchmarks/out/full-suite \
	  --results-page docs/results.md

# Auto against the grids and every peer, the whole suite, 3 seeds (docs/results-auto.md)
results-auto: venv data
	# its runs are a part of the full suite's: take those already trained there
	$(PY) benchmarks/share_records.py benchmarks/out/full-suite benchmarks/out/auto-eval
	$(VENV)/bin/lrfree bench --suite full --out benchmarks/out/auto-eval \
	  --optimizers adamw,adamw@grid,sgd-m@grid,auto,prodigy,dadapt-adam,schedulefree-adamw,prodigy-sf,dog,ldog \
	  --results-page docs/results-auto.md

# the long suite (docs/results-long.md): the Fashion-MNIST tasks at 10 epochs on up to 60k
# images, every optimizer of the full suite; about 5 hours per seed on 2 cores, so one seed per
# sitting: make results-long SEEDS=1, then SEEDS=2, then SEEDS=3 (each trains only what is
# missing). Its records are committed every 10 minutes while it runs
# (benchmarks/commit_partial.sh), so a sitting that ends loses only the runs in progress.
SEEDS ?= 1
results-long: venv data
	$(VENV)/bin/lrfree bench --suite long --seeds $(SEEDS) --out benchmarks/out/long-suite \
	  --no-plots & pid=$$!; \
	  bash benchmarks/commit_partial.sh benchmarks/out/long-suite $$pid 10; wait $$pid
	$(MAKE) results-long-page SEEDS=$(SEEDS)

# docs/results-long.md from the long suite's records so far (a sitting that ended early leaves
# runs without a record: the page counts them), with the verdicts that changed against the
# full suite's shorter budget
results-long-page: venv
	$(PY) -m lrfree.bench.pages benchmarks/out/long-suite --suite long --seeds $(SEEDS) \
	  --compare-with benchmarks/out/full-suite --results-page docs/results-long.md

# the papers' experiments through the bench (docs/benchmark.md, "The papers' experiments"), each
# into benchmarks/out/<suite>; PAPER_SUITES=paper-lw runs one. paper-adalip is the long one (about
# an hour on 2 cores; the rest about an hour together)
PAPER_SUITES ?= paper-lw paper-lw-10k paper-tlr paper-tlr-10ep paper-tlr-20k paper-adler \
	paper-adler-2048 paper-camhd paper-camhd-5ep paper-adalip
results-papers: venv data
	for s in $(PAPER_SUITES); do \
	  $(VENV)/bin/lrfree bench --suite $$s --out benchmarks/out/$$s --no-progress || exit 1; \
	done

# both results pages (and their folders' report.md, report.json, PNGs) redrawn from the records
# already in benchmarks/out/, without training: after a change to the tables or the plots only
results-pages: venv
	$(PY) -m lrfree.bench.pages benchmarks/out/full-suite --results-page docs/results.md
	$(PY) -m lrfree.bench.pages benchmarks/out/auto-eval --results-page docs/results-auto.md

test: venv data docs
	$(VENV)/bin/ruff check $(LINTED)
	$(PY) -m pytest -q -n 2 --dist loadfile

# the documentation site (mkdocs.yml) into build/site; warnings are errors
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

lint: venv
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

clean:
	rm -rf $(VENV) bench-out .pytest_cache
