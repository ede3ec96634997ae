# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Both create .venv with the CPU build of torch 2.13.0 and pixdiff installed in editable mode;
# `make test` then builds the wheel and uses it from a fresh venv outside the clone (.ci/check_wheel.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

.PHONY: demo test
demo: $(VENV)/.installed
	$(VENV)/bin/pixdiff train emoji_tiny --out runs/emoji_tiny-$$(date +%Y%m%d-%H%M%S)

# -n auto: one pytest worker per core (pytest-xdist); loadfile keeps a file's tests, and so its
# module fixtures (tiny trained models, data caches), on one worker
test: $(VENV)/.installed
	$(PY) -m pytest -n auto --dist loadfile
	bash .ci/check_wheel.sh $(PY)
