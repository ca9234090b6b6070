"""Online scoring rules, what each one decided about each ended span, and scoring runs.

A rule is Braintrust's "project score" of type online. When a span ends, every enabled rule of
its project decides about it once (`SpanDecisions`); each (span, rule, scorer) it queues becomes
one `ScoringRun`, which a worker turns into a score on the span and a child scoring span.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from projects.models import APIKey, Project, Span


class Rule(models.Model):
    class SampleBy(models.TextChoices):
        SPAN = "span"
        TRACE = "trace"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rules")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    # [{"type": "global", "name": ...} | {"type": "function", "id": ..., "version"?: ...}]
    scorers = models.JSONField(default=list)
    sampling_rate = models.FloatField(default=1.0)
    btql_filter = models.TextField("BTQL filter", blank=True, default="")
    apply_to_root_span = models.BooleanField(default=False)
    apply_to_span_names = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    sample_by = models.CharField(max_length=10, choices=SampleBy.choices, default=SampleBy.SPAN)
    # Who the rule runs as: its creator, and the key it used. Their rights are checked at run time.
    run_as_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Not a database constraint: a deleted key leaves its id, so that the rule stops as it does
    # for a revoked key, rather than run on as the key's user with the user's rights.
    run_as_key = models.ForeignKey(
        APIKey, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="rule_name_unique_in_project")
        ]
        indexes = [models.Index(fields=["project", "enabled"])]
        ordering = ["project", "name"]

    def __str__(self):
        return self.name


class Decision(models.TextChoices):
    """What a rule decided about an ended span. The first three are final; `queued` becomes
    `scored` or `error` through the rule's runs (see `selectors.scoring_state`)."""

    FILTERED_OUT = "filtered_out"
    NOT_SELECTED = "not_selected"
    NOT_SAMPLED = "not_sampled"
    QUEUED = "queued"
    SCORED = "scored"
    ERROR = "error"


class RuleSet(models.Model):
    """The enabled rules of a project, in order, as they stood when spans ended: what
    `SpanDecisions.codes` are the decisions of. One row per list of rules, shared by every span
    that ended under it; editing a rule keeps it, adding, removing, enabling or disabling one
    (or renaming, which reorders) makes another."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    rules = models.JSONField()  # [rule id, ...]
    digest = models.CharField(max_length=64)  # of `rules`: to find the set again
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "digest"], name="rule_set_unique_in_project")
        ]


# One character per rule in `SpanDecisions.codes`.
DECISION_CODES = {
    Decision.FILTERED_OUT: "f",
    Decision.NOT_SELECTED: "n",
    Decision.NOT_SAMPLED: "s",
    Decision.QUEUED: "q",
    Decision.ERROR: "e",
}
DECISIONS_BY_CODE = {code: decision for decision, code in DECISION_CODES.items()}


class SpanDecisions(models.Model):
    """Every enabled rule's decision about one span, taken when it ended: the "why is there no
    score?" record. One row per ended span rather than one per (span, rule): ingest writes it,
    and with many rules that is the difference between one small insert per span and many. The
    decisions are a character per rule of its rule set (`DECISION_CODES`): with 20 rules, 20
    bytes a span rather than a kilobyte of {rule id: decision}.

    Its references are not database constraints, nor are ScoringRun's, for the same reason:
    ingest writes these rows for every span that ends, and checking them cost a third of the
    database's extra work for 20 rules (measured on PostgreSQL: 2.5 ms per batch of 50 ended
    spans). The rows are written in the transaction that writes their span, whose project is
    checked; deletes cascade through the ORM as before; and a worker drops a run whose span or
    rule is gone (`services.runs_execute`)."""

    span = models.OneToOneField(
        Span, primary_key=True, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    # No index of its own: the (project, ended_at) index serves it.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    ended_at = models.DateTimeField()
    rule_set = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    codes = models.TextField()  # codes[i]: the decision of rule_set.rules[i]
    errors = models.JSONField(default=dict, blank=True)  # {rule id: message} for Decision.ERROR

    class Meta:
        verbose_name_plural = "span decisions"
        indexes = [models.Index(fields=["project", "ended_at"])]

    @property
    def decisions(self) -> dict[str, str]:
        """{rule id: Decision value}."""
        return {rule: DECISIONS_BY_CODE[code].value for rule, code in zip(self.rule_set.rules, self.codes)}


class ScoringRun(models.Model):
    """One scorer on one span, for a rule (online) or on request (manual).

    Online runs are unique on (span, rule, scorer), so a span is scored at most once per rule
    and scorer whatever is retried or replayed. Manual runs are not: scoring a span again adds a
    scoring span and updates the score. Workers claim runs with a lease (`lease_token`,
    `lease_expires`); a run whose lease expired is claimed again (see services.runs_sweep).
    Its project, span and rule are not database constraints: see SpanDecisions."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        ERROR = "error"

    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    # Span and rule have no index of their own: the unique (span, rule, scorer) index and the
    # (rule, status) one serve them. Every index is written at ingest, and on PostgreSQL again
    # by each claim and finish of the run.
    span = models.ForeignKey(
        Span, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    rule = models.ForeignKey(
        Rule,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="runs",
        db_index=False,
        db_constraint=False,
    )
    scorer = models.JSONField()  # the reference, as in Rule.scorers
    scorer_key = models.CharField(max_length=300)  # its canonical text, for the unique constraint
    # Manual runs run as whoever asked.
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    requested_by_key = models.ForeignKey(  # not a constraint, as Rule.run_as_key
        APIKey, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+",
        db_index=False,
    )  # fmt: skip
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)  # claims so far
    not_before = models.DateTimeField(null=True, blank=True)  # retry back-off
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True)
    scores = models.JSONField(null=True, blank=True)  # {name: value}
    error = models.TextField(blank=True, default="")
    scoring_span_row_id = models.CharField(max_length=255, blank=True, default="")
    created = models.DateTimeField()
    updated = models.DateTimeField()
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Manual runs have no rule, and NULLs are distinct in a unique index: they never
            # conflict. Not a partial index, so that it also finds every run of a span.
            models.UniqueConstraint(
                fields=["span", "rule", "scorer_key"], name="one_run_per_span_rule_scorer"
            )
        ]
        indexes = [
            models.Index(fields=["status", "updated"]),
            models.Index(fields=["rule", "status"]),
            # Only claimed runs have a token: new runs (written at ingest) skip this index.
            models.Index(
                fields=["lease_token"], condition=Q(lease_token__isnull=False), name="run_lease_token"
            ),
        ]

    def __str__(self):
        return f"run {self.pk} ({self.scorer_key}, {self.status})"


class Function(models.Model):
    """A project's custom scorer (Braintrust's function with function_type "scorer"): code run
    in the sandbox, or an LLM-as-a-judge prompt. Every edit makes a new `FunctionVersion`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="functions")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200)
    description = models.TextField(blank=True, default="")
    function_type = models.CharField(max_length=20, default="scorer")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="function_slug_unique_in_project")
        ]
        ordering = ["project", "name"]

    def __str__(self):
        return self.name


class FunctionVersion(models.Model):
    """One immutable version of a function: what it runs."""

    function = models.ForeignKey(Function, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    function_data = models.JSONField()  # {"type": "code", "data": {...}} or {"type": "prompt"}
    prompt_data = models.JSONField(null=True, blank=True)  # for prompts: {prompt, options, parser}
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["function", "version"], name="function_version_unique")
        ]
        ordering = ["function", "version"]


class LLMEndpoint(models.Model):
    """An organization's OpenAI-compatible endpoint for LLM-backed scorers. The key is stored
    encrypted (scoring/scorers/llm.py) and never returned."""

    organization = models.OneToOneField(
        "projects.Organization", primary_key=True, on_delete=models.CASCADE, related_name="llm_endpoint"
    )
    base_url = models.URLField("base URL", max_length=500)
    api_key_encrypted = models.TextField(blank=True, default="")
    default_model = models.CharField(max_length=200)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "LLM endpoint"

    def __str__(self):
        return self.base_url
