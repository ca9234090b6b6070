"""Rules: their configuration, checked and compiled on save, and Test rule, which previews one
without saving it."""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from onlinescore.exceptions import ValidationError
from projects.auth import Principal, principal_of
from projects.models import Project, Span
from projects.selectors import span_event
from scoring import scorers
from scoring.btql.errors import BTQLError
from scoring.btql.predicate import predicate
from scoring.engine import CompiledRule
from scoring.models import Decision, Rule
from scoring.services.runs import runs_as

_ONLINE_DEFAULTS = {
    "btql_filter": "",
    "apply_to_root_span": False,
    "apply_to_span_names": [],
    "enabled": True,
    "sample_by": Rule.SampleBy.SPAN,
}


def online_config_clean(
    online: dict, *, current: dict | None = None, organization=None, principal: Principal | None = None
) -> dict:
    """A rule's `config.online` made whole and checked: `online` over `current` (a PATCH) or
    over the defaults. The filter is compiled and each scorer resolved for the organization and
    the principal the rule runs as, so a rule that saves can run. Errors name the field
    (`config.online.<name>`), and BTQL errors their position. The scorers of `current` are
    kept as they are unless `online` sets them."""
    config = {**_ONLINE_DEFAULTS, **(current or {})}
    # null is Braintrust's "unset": the default (so a PATCH with "btql_filter": null clears it).
    config.update(
        {k: _ONLINE_DEFAULTS[k] if v is None and k in _ONLINE_DEFAULTS else v for k, v in online.items()}
    )
    field = "config.online.{}".format
    for required in ("sampling_rate", "scorers"):
        if config.get(required) is None:
            raise ValidationError(f"{required} is required.", field=field(required))
    text = config["btql_filter"] or ""
    if text.strip():
        try:
            predicate(text)  # as sent, so that an error's line and column point into it
        except BTQLError as exc:
            exc.details["field"] = field("btql_filter")
            raise
    config["btql_filter"] = text.strip()
    if current is None or "scorers" in online:
        # Only scorers being set are checked: a rule whose custom scorer was deleted since (or
        # whose user lost access to it) can still be disabled, renamed or edited otherwise; its
        # runs say why they fail.
        config["scorers"] = scorers.references_clean(
            config["scorers"], field=field("scorers"), organization=organization, principal=principal
        )
    rate = config["sampling_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValidationError("sampling_rate is a number from 0 to 1.", field=field("sampling_rate"))
    names = config["apply_to_span_names"] or []
    if not isinstance(names, list) or any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValidationError("Span names are non-empty strings.", field=field("apply_to_span_names"))
    config["apply_to_span_names"] = list(dict.fromkeys(n.strip() for n in names))
    return config


def rule_create(
    *, project: Project, name: str, description: str, online: dict, run_as_user, run_as_key=None
) -> Rule:
    """A new rule, running as `run_as_user` (and the API key it was made with, if any)."""
    rule = Rule(
        project=project,
        name=_rule_name_clean(name),
        description=description or "",
        run_as_user=run_as_user,
        run_as_key=run_as_key,
        **online_config_clean(
            online,
            organization=project.organization,
            principal=principal_of(run_as_user, run_as_key, project.organization),
        ),
    )
    return _rule_save(rule)


def rule_get_or_create(*, project: Project, name: str, **fields) -> Rule:
    """A new rule, or, as in Braintrust, the project's rule of this name unchanged."""
    existing = Rule.objects.filter(project=project, name=name.strip()).first()
    if existing is not None:
        return existing
    try:
        return rule_create(project=project, name=name, **fields)
    except ValidationError as exc:
        # Created meanwhile by another request.
        found = Rule.objects.filter(project=project, name=name.strip()).first()
        if exc.details.get("field") == "name" and found is not None:
            return found
        raise


def rule_update(*, rule: Rule, editor: Principal | None = None, name: str | None = None,
                description: str | None = None, online: dict | None = None) -> Rule:  # fmt: skip
    """Change a rule. New scorers must be usable both by the user the rule runs as and by the
    editor: no one can make a rule use a scorer they could not use themselves."""
    if name is not None:
        rule.name = _rule_name_clean(name)
    if description is not None:
        rule.description = description
    if online:
        organization = rule.project.organization
        user, key, key_id = runs_as(rule)
        principal = None if key is None and key_id else principal_of(user, key, organization)
        if online.get("scorers") is not None and principal is None:
            raise ValidationError(
                "The user or API key this rule runs as is no longer in the organization: create a new rule.",
                field="config.online.scorers",
            )
        config = online_config_clean(
            online, current=rule_online_config(rule), organization=organization, principal=principal
        )
        if editor is not None and online.get("scorers") is not None:
            scorers.references_clean(
                config["scorers"], field="config.online.scorers", organization=organization, principal=editor
            )
        for key, value in config.items():
            setattr(rule, key, value)
    return _rule_save(rule)


def rule_delete(*, rule: Rule) -> None:
    rule.delete()


def rule_online_config(rule: Rule) -> dict:
    return {key: getattr(rule, key) for key in ("sampling_rate", "scorers", *_ONLINE_DEFAULTS)}


def _rule_name_clean(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError("A rule needs a name.", field="name")
    return name


def _rule_save(rule: Rule) -> Rule:
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        if Rule.objects.filter(project=rule.project_id, name=rule.name).exclude(pk=rule.pk).exists():
            raise ValidationError(
                f"This project already has a rule named {rule.name!r}.", field="name"
            ) from None
        raise
    return rule


# --- Test rule ---------------------------------------------------------------------------


def rule_test(*, principal: Principal, project: Project, online: dict, limit: int = 20) -> list[dict]:
    """What a rule would do with the project's most recent ended spans, without saving
    anything: the decision steps for each span, and for each span that passes the filter and
    the selection, its scores from really running the scorers (synchronously, within the
    SCORING_TEST_RULE_SECONDS budget). Sampling is drawn with a fresh rule id, so it shows the
    rate at work rather than the exact spans the saved rule will pick."""
    organization = project.organization
    config = online_config_clean(online, organization=organization, principal=principal)
    compiled = CompiledRule.of(Rule(project=project, **config))
    resolved = [
        scorers.resolve(ref, organization=organization, principal=principal, project=project)
        for ref in config["scorers"]
    ]
    spans = (
        Span.objects.filter(project=project, deleted=False, ended_at__isnull=False)
        .filter(Q(span_attributes__purpose__isnull=True) | ~Q(span_attributes__purpose="scorer"))
        .order_by("-ended_at", "-pk")[:limit]
    )
    deadline = timezone.now() + timedelta(seconds=settings.SCORING_TEST_RULE_SECONDS)
    previews = []
    for span in spans:
        row = span_event(span)
        decision, message = compiled.decide(row)
        preview: dict[str, Any] = {
            "id": span.row_id,
            "span_id": span.span_id,
            "name": span.name,
            "matched_filter": decision not in (Decision.FILTERED_OUT, Decision.ERROR),
            "selected": decision in (Decision.NOT_SAMPLED, Decision.QUEUED),
            "sampled": decision == Decision.QUEUED,
        }
        if message:
            preview["error"] = message
        elif preview["selected"]:
            preview.update(_preview_scores(resolved, row, deadline))
        previews.append(preview)
    return previews


def _preview_scores(resolved: list, row: dict, deadline: datetime) -> dict:
    values, errors = {}, []
    for scorer in resolved:
        remaining = (deadline - timezone.now()).total_seconds()
        if remaining <= 0:
            errors.append(f"{scorer.name}: not run, the preview's time budget ran out.")
            continue
        outcome = scorers.run(scorer, row, timeout=min(remaining, settings.SCORING_SCORER_TIMEOUT))
        if outcome.error:
            errors.append(f"{scorer.name}: {outcome.error}")
        else:
            values.update(outcome.scores)
    return {"scores": values, **({"error": "; ".join(errors)} if errors else {})}
