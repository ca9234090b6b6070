"""The web UI's pages for a project: logs, a trace, online scoring rules, scorers, and the
monitor. Pages read through the selectors; every write (create a rule, score logs, test a rule
or a scorer) goes from the page's script to the JSON API, so the UI and the API share one
validation and one permission check."""

import uuid

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404
from django.shortcuts import redirect
from django.utils import timezone
from django.views import View

from onlinescore.exceptions import ApplicationError, NotFound
from projects.views import ProjectPage
from scoring import monitoring, selectors
from scoring.serializers import RuleSerializer

LOGS_PAGE_SIZE = 50


def _ref_key(ref: dict) -> str:
    return f"{ref['type']}:{ref.get('name') or ref.get('id')}"


class ScorerPickerMixin:
    """Pages with a scorer picker: its groups, and labels for the references shown."""

    def scorer_context(self) -> dict:
        groups = selectors.scorer_choices(principal=self.principal)
        self.labels = {_ref_key(o["ref"]): o["label"] for g in groups for o in g["options"]}
        return {"scorer_groups": groups}

    def label(self, ref: dict) -> str:
        return self.labels.get(_ref_key(ref), ref.get("name") or f"function {ref.get('id')}")


class LogsPage(ScorerPickerMixin, ProjectPage):
    template_name = "scoring/logs.html"
    tab = "logs"

    def get_context_data(self, **kwargs):
        filter_text = self.request.GET.get("filter", "")
        cursor = self.request.GET.get("cursor") or None
        events, next_cursor, filter_error = [], None, None
        try:
            events, next_cursor = selectors.traces_page(
                project=self.project, filter_text=filter_text, limit=LOGS_PAGE_SIZE, cursor=cursor
            )
        except ApplicationError as error:
            filter_error = {"message": error.message, **error.details}
        score_names = sorted({name for event in events for name in event["scores"] or {}})
        errors = selectors.scorer_errors(project=self.project, row_ids=[event["id"] for event in events])
        for event in events:
            event["duration"] = selectors.span_duration(event)
            event["scorer_errors"] = errors.get(event["id"], [])
            event["score_cells"] = [(event["scores"] or {}).get(name) for name in score_names]
        return super().get_context_data(
            events=events,
            score_names=score_names,
            filter=filter_text,
            filter_error=filter_error,
            next_cursor=next_cursor,
            paged=cursor is not None,
            **self.scorer_context(),
            **kwargs,
        )


class TracePage(ScorerPickerMixin, ProjectPage):
    template_name = "scoring/trace.html"
    tab = "logs"

    def get_context_data(self, **kwargs):
        try:
            spans = selectors.trace_get(project=self.project, row_id=self.kwargs["row_id"])
        except NotFound as error:
            raise Http404(error.message) from None
        selected_id = self.request.GET.get("span") or self.kwargs["row_id"]
        selected = next((s for s in spans if s["id"] == selected_id), spans[0])
        context = self.scorer_context()
        state = selectors.scoring_state(project=self.project, row_id=selected["id"])
        for run in state["manual_runs"] + [run for rule in state["rules"] for run in rule["runs"]]:
            run["label"] = self.label(run["scorer"])
        return super().get_context_data(spans=spans, selected=selected, state=state, **context, **kwargs)


class SpanPermalink(LoginRequiredMixin, View):
    """Where the SDK's `span.permalink()` points, as Braintrust's app does:
    /app/<organization>/object?object_type=project_logs&object_id=<project id>&id=<row id>.
    It leads to the span in its trace, whose page checks who may read it."""

    def get(self, request, organization):
        params = request.GET
        project_id, row_id = params.get("object_id", ""), params.get("id", "")
        if params.get("object_type") != "project_logs" or not row_id:
            raise Http404("Only a link to a span of a project's logs leads somewhere here.")
        try:
            uuid.UUID(project_id)
        except ValueError:
            raise Http404("No such project.") from None
        return redirect("trace", project_id=project_id, row_id=row_id)


class RulesPage(ScorerPickerMixin, ProjectPage):
    template_name = "scoring/rules.html"
    tab = "rules"

    def get_context_data(self, **kwargs):
        context = self.scorer_context()
        rules = list(selectors.rule_list(principal=self.principal, project_id=self.project.pk))
        rows = [
            {
                "rule": rule,
                "scorers": [self.label(ref) for ref in rule.scorers],
                "stats": selectors.rule_stats(rule=rule),
                "body": RuleSerializer(rule).data,
            }
            for rule in rules
        ]
        return super().get_context_data(rows=rows, **context, **kwargs)


class RuleErrorsPage(ProjectPage):
    template_name = "scoring/rule_errors.html"
    tab = "rules"

    def get_context_data(self, **kwargs):
        rule = (
            selectors.rule_list(principal=self.principal, project_id=self.project.pk)
            .filter(pk=self.kwargs["rule_id"])
            .first()
        )
        if rule is None:
            raise Http404("No such rule in this project.")
        errors = selectors.rule_errors(rule=rule)
        return super().get_context_data(
            rule=rule,
            errors=errors,
            shown=selectors.RULE_ERRORS_SHOWN,
            stats=selectors.rule_stats(rule=rule),
            **kwargs,
        )


class ScorersPage(ProjectPage):
    template_name = "scoring/scorers.html"
    tab = "scorers"

    def get_context_data(self, **kwargs):
        functions = selectors.function_list(principal=self.principal, project_id=self.project.pk)
        return super().get_context_data(
            functions=[selectors.function_event(function) for function in functions], **kwargs
        )


class MonitorPage(ProjectPage):
    template_name = "scoring/monitor.html"
    tab = "monitor"

    def get_context_data(self, **kwargs):
        bucket = self.request.GET.get("bucket")
        bucket = bucket if bucket in monitoring.BUCKETS else "hour"
        until = timezone.now()
        since = until - monitoring.BUCKETS[bucket].window
        scopes = [("All scores in this project", None)] + [
            (f"Rule: {rule.name}", rule)
            for rule in selectors.rule_list(principal=self.principal, project_id=self.project.pk)
        ]
        counts = monitoring.run_counts(project=self.project, since=since, until=until)
        charts = []
        if len(scopes) > 1 or counts["all"].finished:  # else nothing to chart: say how to start
            for title, rule in scopes:
                series = monitoring.score_series(
                    project=self.project, rule=rule, bucket=bucket, since=since, until=until
                )
                svg = monitoring.chart_svg(
                    series=series, bucket=bucket, since=since, until=until, title=title
                )
                runs = counts.get(rule.pk if rule else "all", monitoring.RunCounts())
                charts.append({"title": title, "svg": svg, "rule": rule, "runs": runs})
        return super().get_context_data(bucket=bucket, charts=charts, **kwargs)
