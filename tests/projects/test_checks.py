"""The installation checks of `manage.py check` (and of every command that runs them)."""

import sqlite3

from django.core import checks
from django.db import connection

from projects.checks import sqlite_errors

SQLITE = "django.db.backends.sqlite3"


def test_an_sqlite_older_than_the_writes_need_is_an_error():
    [error] = sqlite_errors([SQLITE], (3, 31, 1))
    assert error.id == "projects.E001" and "SQLite 3.31.1 is too old" in error.msg and "3.35" in error.msg


def test_a_recent_sqlite_or_postgresql_passes():
    assert sqlite_errors([SQLITE], (3, 35, 0)) == sqlite_errors([SQLITE], (3, 40, 1)) == []
    assert sqlite_errors(["django.db.backends.postgresql"], (3, 31, 1)) == []


def test_the_check_runs_with_the_others_on_the_configured_database(monkeypatch):
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    ids = {message.id for message in checks.run_checks()}
    assert ("projects.E001" in ids) == (connection.vendor == "sqlite")
