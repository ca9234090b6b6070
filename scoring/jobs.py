"""RQ entry points. Jobs carry run ids only; the rows say everything else."""

from scoring.services import runs_execute


def score_runs(run_ids: list[int]) -> None:
    runs_execute(run_ids=run_ids)
