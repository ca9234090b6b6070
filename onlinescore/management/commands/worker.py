from django.core.management.base import BaseCommand

from onlinescore.rq import embedded_redis


class Command(BaseCommand):
    help = "Run an RQ worker on the onlinescore queues (the one `make run` starts)."

    def add_arguments(self, parser):
        parser.add_argument("--burst", action="store_true", help="Exit when the queues are empty.")

    def handle(self, *args, burst=False, **options):
        import django_rq
        from rq.worker import SimpleWorker

        # SimpleWorker runs jobs in this process instead of forking one per job: about five times
        # the throughput for the short jobs onlinescore runs (see the README's Performance section).
        worker = django_rq.get_worker("default", worker_class=SimpleWorker)
        with embedded_redis():
            worker.work(burst=burst, with_scheduler=not burst, logging_level="INFO")
