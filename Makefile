# The two commands a newcomer needs:
#   make run   -- install everything, import and index the sample gallery, start worker + web server
#   make test  -- install what is missing, lint, build the docs and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint docs chromium worker superuser bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

run: export DJANGO_DEBUG ?= 1
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py import_photos sample_gallery/photos --manifest sample_gallery/manifest.csv
	$(PY) manage.py build_clip_index
	$(PY) manage.py serve $(HOST):$(PORT)

test: install chromium lint docs
	$(PY) -m pytest $(PYTEST_ARGS)

# The documentation site (docs/, mkdocs.yml): a broken link or anchor fails the build
docs: install
	$(PY) -m mkdocs build --strict --quiet

# ruff (lint and formatting) and mypy, configured in pyproject.toml
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# The browser tests need Debian's Chromium; installed when we may (root), else they are skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "Chromium not installed (sudo apt-get install chromium): browser tests will be skipped."

worker: install
	$(PY) manage.py qcluster

superuser: install
	DJANGO_DEBUG=1 $(PY) manage.py createsuperuser

bench: install
	$(PY) bench/place_recall.py

clean:
	rm -rf var .pytest_cache
