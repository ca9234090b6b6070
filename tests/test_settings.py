"""Settings derived from the environment, read as a fresh process reads them."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

_READ = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps([getattr(s, 'CSRF_TRUSTED_ORIGINS', []), s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE]))"
)


def settings_with(**env) -> list:
    environment = {k: v for k, v in os.environ.items() if k not in ("PUBLIC_URL", "DATABASE_URL")}
    environment.update(DJANGO_SETTINGS_MODULE="onlinescore.settings.base", **env)
    output = subprocess.run(
        [sys.executable, "-c", _READ],
        env=environment,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.splitlines()[-1])


def test_an_https_public_url_is_a_trusted_origin_with_secure_cookies():
    assert settings_with(PUBLIC_URL="https://scores.example.com/base/") == [
        ["https://scores.example.com"],
        True,
        True,
    ]


def test_a_plain_http_public_url_is_trusted_without_secure_cookies():
    assert settings_with(PUBLIC_URL="http://10.0.0.5:8000") == [["http://10.0.0.5:8000"], False, False]


def test_without_a_public_url_only_the_request_host_is_trusted():
    assert settings_with() == [[], False, False]


def test_llm_prices_come_from_the_environment_and_a_bad_value_names_the_setting(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from onlinescore.settings.base import _prices

    monkeypatch.setenv("SCORING_LLM_PRICES", '{"my-model": [1, 2.5]}')
    assert _prices("SCORING_LLM_PRICES", {"default": (0, 0)}) == {"my-model": (1, 2.5)}
    monkeypatch.delenv("SCORING_LLM_PRICES")
    assert _prices("SCORING_LLM_PRICES", {"default": (0, 0)}) == {"default": (0, 0)}
    for bad in ('{"my-model": 1}', '{"my-model": [1, true]}', '{"m": [1, -2]}', "[1, 2]", "gpt: 1"):
        monkeypatch.setenv("SCORING_LLM_PRICES", bad)
        with pytest.raises(ImproperlyConfigured, match="SCORING_LLM_PRICES must be a JSON object"):
            _prices("SCORING_LLM_PRICES", {})


_READ_KEY = "import django; django.setup(); from django.conf import settings as s; print(s.SECRET_KEY)"


def secret_key_with(var_dir, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL")}
    environment.update(
        DJANGO_SETTINGS_MODULE="onlinescore.settings.base", ONLINESCORE_VAR_DIR=str(var_dir), **env
    )
    run = subprocess.run([sys.executable, "-c", _READ_KEY], env=environment, cwd=settings.BASE_DIR,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return run.stdout.splitlines()[-1]


def test_the_secret_key_is_the_environments_else_the_instances_own_else_the_public_one(tmp_path):
    assert secret_key_with(tmp_path) == settings.DEVELOPMENT_SECRET_KEY
    (tmp_path / "secret_key").write_text("made-by-serve\n")
    assert secret_key_with(tmp_path) == "made-by-serve"
    assert secret_key_with(tmp_path, SECRET_KEY="from-the-environment") == "from-the-environment"


def test_the_public_development_key_is_a_warning_at_start(settings):
    from django.core import checks

    settings.DEBUG, settings.SECRET_KEY = False, settings.DEVELOPMENT_SECRET_KEY
    assert [m.id for m in checks.run_checks(tags=[checks.Tags.security]) if m.id == "projects.W001"] == [
        "projects.W001"
    ]
    settings.SECRET_KEY = "a long random value"
    assert not [m for m in checks.run_checks(tags=[checks.Tags.security]) if m.id == "projects.W001"]
