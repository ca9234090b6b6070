from django.apps import AppConfig
from django.db.backends.signals import connection_created


class ScoringConfig(AppConfig):
    name = "scoring"
    verbose_name = "Online scoring"

    def ready(self):
        from scoring.btql.q import register_sqlite_functions

        connection_created.connect(register_sqlite_functions, dispatch_uid="scoring.btql.sqlite_functions")
