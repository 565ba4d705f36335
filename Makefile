# Two commands do all the set-up on a fresh machine:
#   make book   -> creates .venv if missing, installs, builds the executed book (chapters/_build/html)
#   make test   -> creates .venv if missing, installs, runs unit tests and every notebook under nbval
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Real Omniglot: use ../shared/data/omniglot when it sits beside the checkout and nothing else is set.
ifeq ($(origin METALEARN_DATA), undefined)
ifneq ($(wildcard ../shared/data/omniglot/omniglot-py),)
export METALEARN_DATA := $(abspath ../shared/data/omniglot)
endif
endif

.PHONY: book test install sync-notebooks clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	# System packages (Debian), when running as root with apt: Chromium for the browser check of the
	# built book (and a Chinese font, so the glossary's terms show in its screenshots), and
	# Fashion-MNIST for chapter 8's cross-domain test (offline copy).
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	 fc-list :lang=zh 2>/dev/null | grep -q . || missing="$$missing fonts-wqy-microhei"; \
	 test -d /usr/share/datasets/fashion-mnist || missing="$$missing dataset-fashion-mnist"; \
	 if [ -n "$$missing" ]; then \
	   if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	     apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	   else echo "warning: missing system packages ($$missing): sudo apt-get install$$missing"; fi; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements.txt
	# learn2learn 0.2.0: re-cythonize so it compiles on Python >= 3.11; skip qpth/gsutil.
	$(PY) -m pip install -q --no-deps --use-pep517 -C--build-option=build_ext learn2learn==0.2.0
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# -W --keep-going: any Sphinx warning (unknown citation, broken reference...) fails the build after
# listing them all; a notebook cell that raises fails it at once (book.yml: execute.raise_on_error).
# --toc takes an absolute path: Jupyter Book resolves a relative one against chapters/ again.
# The notebooks run first, two at a time with one torch thread each, into the execution cache that
# the Sphinx build then reads (metalearn_lib/tools/execute_book.py; book.yml: execute_notebooks: cache).
book: $(STAMP)
	$(PY) -m metalearn_lib.tools.execute_book --jobs 2
	$(VENV)/bin/jupyter-book build -W --keep-going chapters --config book.yml --toc $(CURDIR)/chapters/_toc.yml
	$(PY) -m metalearn_lib.tools.check_offline chapters/_build/html
	$(PY) -m metalearn_lib.tools.check_browser chapters/_build/html --screenshots chapters/_build/screenshots
	@echo "Book: chapters/_build/html/index.html"

# Two pytest workers on two cores: one torch thread each (and in the notebook kernels they start),
# since oversubscribed OpenMP threads spin and slow everything down several-fold.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile -q

sync-notebooks: $(STAMP)
	$(PY) -m metalearn_lib.tools.sync_notebooks

clean:
	rm -rf chapters/_build
