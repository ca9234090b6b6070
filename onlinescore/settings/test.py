from .base import *  # noqa: F401,F403
from .base import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # pytest-django builds an in-memory test database; WAL does not apply there.
    DATABASES["default"]["OPTIONS"].pop("init_command")

# Serve static files from the apps, without a collectstatic run.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
# The tests' fake LLM endpoint listens on loopback; the tests of the check itself allow nothing.
SCORING_LLM_ALLOWED_NETWORKS = ["127.0.0.0/8"]
