"""Writes of online scoring, one module per concern:

- `rules`: rules, checked and compiled on save, and Test rule;
- `runs`: the life of a scoring run, from manual scoring and the enqueue to the workers'
  claim, scoring and record, and the sweeper;
- `functions`: custom scorers and the organization's LLM endpoint.

Callers use the names below; tests that replace a piece of a module patch it there.
"""

from scoring.services.functions import (
    function_data_clean,
    function_delete,
    function_get_or_create,
    function_invoke,
    function_update,
    llm_endpoint_check,
    llm_endpoint_delete,
    llm_endpoint_set,
)
from scoring.services.rules import (
    online_config_clean,
    rule_create,
    rule_delete,
    rule_get_or_create,
    rule_online_config,
    rule_test,
    rule_update,
)
from scoring.services.runs import logs_score, runs_enqueue, runs_execute, runs_sweep

__all__ = [
    "function_data_clean", "function_delete", "function_get_or_create", "function_invoke", "function_update",
    "llm_endpoint_check", "llm_endpoint_delete", "llm_endpoint_set",
    "online_config_clean", "rule_create", "rule_delete", "rule_get_or_create", "rule_online_config", "rule_test",
    "rule_update",
    "logs_score", "runs_enqueue", "runs_execute", "runs_sweep",
]  # fmt: skip
