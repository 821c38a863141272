PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 4100
BROWSER := /usr/bin/chromium
# pytest-xdist: the suite waits on servers and jobs much of the time; on two cores, two processes left a
# quarter of the CPU idle, and three use most of it (the suite took 14.7 minutes in two, 10.5 in three).
TEST_PROCESSES ?= 3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint bench gallery browser clean

# The venv is (re)built whenever a requirements file changes.
$(BIN)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.testing: $(BIN)/.runtime requirements-test.txt
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	touch $@

run: $(BIN)/.runtime
	PORT=$(PORT) $(BIN)/gunicorn --config gunicorn.conf.py 'app:create_app()'

# Browser tests drive Debian's Chromium (never a downloaded browser); installed once, when missing.
$(BROWSER):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

browser: $(BROWSER)

# The shipped nginx site is run in front of gunicorn by tests/test_nginx.py: Debian's nginx, installed once.
NGINX := /usr/sbin/nginx
$(NGINX):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx

test: $(BIN)/.testing $(BROWSER) $(NGINX)
	$(BIN)/ruff check .
	$(BIN)/pytest --numprocesses $(TEST_PROCESSES)

lint: $(BIN)/.testing
	$(BIN)/ruff check .

# The benchmarks' load generator, Debian's wrk; installed once, when missing.
WRK := /usr/bin/wrk
$(WRK):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk

bench: $(BIN)/.testing $(WRK)
	$(BIN)/python bench/bench_api.py $(BENCH_ARGS)

# A contact sheet of the local provider's art for a fixed list of prompts: data/gallery.png.
gallery: $(BIN)/.runtime
	$(BIN)/python bench/gallery.py --out data/gallery.png

clean:
	rm -rf $(VENV) .pytest_cache
