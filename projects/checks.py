"""System checks: what the installation needs that Django itself does not check."""

import sqlite3

from django.conf import settings
from django.core import checks

# The one-statement writes (projects/ingest/bulk.py) use INSERT ... RETURNING (3.35) and
# UPDATE ... FROM (3.33); Django alone accepts SQLite from 3.31.
SQLITE_MINIMUM = (3, 35)


@checks.register
def sqlite_version(app_configs, **kwargs) -> list[checks.CheckMessage]:
    engines = [database["ENGINE"] for database in settings.DATABASES.values()]
    return sqlite_errors(engines, sqlite3.sqlite_version_info)


def sqlite_errors(engines: list[str], version: tuple) -> list[checks.CheckMessage]:
    if not any(engine.endswith("sqlite3") for engine in engines) or version[:2] >= SQLITE_MINIMUM:
        return []
    return [
        checks.Error(
            f"SQLite {'.'.join(map(str, version))} is too old: onlinescore needs "
            f"{'.'.join(map(str, SQLITE_MINIMUM))} or later.",
            hint="Use a Python built against a newer SQLite (Debian 12 and Ubuntu 22.04 have one), "
            "or PostgreSQL (DATABASE_URL).",
            id="projects.E001",
        )
    ]


@checks.register(checks.Tags.security)
def secret_key(app_configs, **kwargs) -> list[checks.CheckMessage]:
    if settings.SECRET_KEY != settings.DEVELOPMENT_SECRET_KEY or settings.DEBUG:
        return []
    return [
        checks.Warning(
            "SECRET_KEY is not set: the built-in development key is in use, and it is public. "
            "Sessions can be forged and the LLM endpoint keys stored in the database decrypted.",
            hint="Set SECRET_KEY to the same long random value for every process (docs/operations.md); "
            "`manage.py serve` makes one for its own instance.",
            id="projects.W001",
        )
    ]
