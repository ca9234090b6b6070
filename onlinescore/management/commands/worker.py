import logging
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from onlinescore.rq import embedded_redis

logger = logging.getLogger("scoring.worker")


class Command(BaseCommand):
    help = "Run an RQ worker on the onlinescore queues (the one `make run` starts), with the scoring sweeper."

    def add_arguments(self, parser):
        parser.add_argument(
            "--burst", action="store_true", help="Exit when the queues are empty (no sweeper)."
        )

    def handle(self, *args, burst=False, **options):
        import django_rq
        from rq.worker import SimpleWorker

        # SimpleWorker runs jobs in this process instead of forking one per job: about five times
        # the throughput for the short jobs onlinescore runs (see the README's Performance section).
        with embedded_redis():
            worker = _worker_when_redis_answers(
                lambda: django_rq.get_worker("default", worker_class=SimpleWorker)
            )
            if not burst:
                threading.Thread(target=_sweep_forever, name="scoring-sweeper", daemon=True).start()
            worker.work(burst=burst, with_scheduler=not burst, logging_level="INFO")


def _worker_when_redis_answers(make_worker):
    """A worker starting while Redis is down (a restart, a deploy) waits for it rather than exit."""
    import redis

    delay = 1.0
    while True:
        try:
            return make_worker()
        except redis.ConnectionError as exc:
            logger.warning("Redis does not answer (%s); trying again in %.0f s.", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30)


def _sweep_forever() -> None:
    """Every SCORING_SWEEP_SECONDS: reclaim runs of dead workers, re-enqueue lost pending runs
    (scoring.services.runs_sweep). Every worker sweeps; sweeps are idempotent."""
    from scoring.services import runs_sweep

    stop = threading.Event()
    while not stop.wait(settings.SCORING_SWEEP_SECONDS):
        try:
            swept = runs_sweep()
            if any(swept.values()):
                logger.info("Sweeper: %(reclaimed)d runs reclaimed, %(requeued)d re-enqueued.", swept)
        except Exception:
            logger.exception("Sweeper failed; trying again in %s s.", settings.SCORING_SWEEP_SECONDS)
        finally:
            close_old_connections()
