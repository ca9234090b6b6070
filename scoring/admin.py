from django import forms
from django.contrib import admin

from onlinescore.exceptions import ValidationError
from projects.admin import ReadOnlyAdmin
from scoring import services
from scoring.models import Rule, ScoringRun, SpanDecisions


class RuleForm(forms.ModelForm):
    """Checked by the same service as the API: the filter compiles, the scorers exist."""

    class Meta:
        model = Rule
        fields = ["project", "name", "description", "scorers", "sampling_rate", "btql_filter",
                  "apply_to_root_span", "apply_to_span_names", "enabled", "sample_by"]  # fmt: skip
        help_texts = {
            "scorers": 'For example [{"type": "global", "name": "Levenshtein"}].',
            "sampling_rate": "From 0 to 1 (0.1 scores one span in ten).",
            "btql_filter": "Only spans matching this BTQL filter clause are considered. Empty: all spans.",
            "apply_to_span_names": 'For example ["llm-call"]. With "apply to root span", a span matching '
            "either is scored; with neither, every span that passes the filter is.",
        }

    def clean(self):
        data = super().clean()
        online = {key: data.get(key) for key in services.rule_online_config(Rule()) if key in data}
        try:
            project = data.get("project")
            data.update(
                services.online_config_clean(online, organization=project.organization if project else None)
            )
        except ValidationError as exc:
            field = str(exc.details.get("field", "")).removeprefix("config.online.").split("[")[0]
            self.add_error(field if field in self.fields else None, exc.message)
        return data


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = ["name", "project", "enabled", "sampling_rate", "btql_filter", "run_as_user", "created"]
    list_filter = ["enabled", "project"]
    search_fields = ["name", "description"]
    readonly_fields = ["run_as_user", "run_as_key", "created", "updated"]
    autocomplete_fields = ["project"]

    def save_model(self, request, obj, form, change):
        if not change:
            # Rules run as their creator; one made here runs as the signed-in admin.
            obj.run_as_user = request.user
        super().save_model(request, obj, form, change)


@admin.register(ScoringRun)
class ScoringRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "scorer_key", "status", "rule", "project", "attempts", "created", "finished"]
    list_filter = ["status", "project"]
    search_fields = ["span__row_id", "scorer_key", "error"]
    list_select_related = ["rule", "project"]
    show_full_result_count = False


@admin.register(SpanDecisions)
class SpanDecisionsAdmin(ReadOnlyAdmin):
    list_display = ["span", "project", "ended_at"]
    list_filter = ["project"]
    list_select_related = ["span", "project"]
    show_full_result_count = False
