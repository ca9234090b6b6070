"""RQ entry points. Jobs carry run ids only; the rows say everything else."""

from django.db import close_old_connections

from scoring.services import runs_execute


def score_runs(run_ids: list[int]) -> None:
    # A worker lives for days: drop connections the database closed or that outlived
    # CONN_MAX_AGE, as Django does around each request.
    close_old_connections()
    try:
        runs_execute(run_ids=run_ids)
    finally:
        close_old_connections()
