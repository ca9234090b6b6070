from django.apps import AppConfig
from django.db.backends.signals import connection_created


class ScoringConfig(AppConfig):
    name = "scoring"
    verbose_name = "Online scoring"

    def ready(self):
        from projects.signals import spans_ended, spans_ending
        from scoring.btql.q import register_sqlite_functions
        from scoring.engine import on_spans_ended, on_spans_ending

        connection_created.connect(register_sqlite_functions, dispatch_uid="scoring.btql.sqlite_functions")
        spans_ending.connect(on_spans_ending, dispatch_uid="scoring.engine.prepare")
        spans_ended.connect(on_spans_ended, dispatch_uid="scoring.engine")
