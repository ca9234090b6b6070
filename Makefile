PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
# The older Braintrust SDK, driven by the end-to-end tests beside the pinned current one.
LEGACY_SDK := .venv-sdk-legacy
LEGACY_STAMP := $(LEGACY_SDK)/.installed

.PHONY: setup run test lock bench clean

setup: $(STAMP)

# Reinstalls only when the lock file changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.lock
	touch $(STAMP)

$(LEGACY_STAMP): tests/e2e/legacy-sdk.lock
	test -x $(LEGACY_SDK)/bin/python || $(PYTHON) -m venv $(LEGACY_SDK)
	$(LEGACY_SDK)/bin/pip install --quiet -r tests/e2e/legacy-sdk.lock
	touch $(LEGACY_STAMP)

run: setup
	$(VENV)/bin/python manage.py serve

# The whole suite on SQLite, and again on PostgreSQL when DATABASE_URL is set.
test: setup $(LEGACY_STAMP)
	env -u DATABASE_URL $(VENV)/bin/pytest
	@if [ -n "$$DATABASE_URL" ]; then echo "== PostgreSQL pass =="; $(VENV)/bin/pytest; fi

lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -c "import subprocess, sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet', *p['dependencies'], *p['optional-dependencies']['test']])"
	.venv-lock/bin/pip freeze | sed '1i # Exact versions CI and `make setup` install. Regenerate with `make lock` after editing pyproject.toml.' > requirements.lock
	rm -rf .venv-lock

bench: setup
	$(VENV)/bin/python bench/ingest.py

clean:
	rm -rf $(VENV) $(LEGACY_SDK) var
