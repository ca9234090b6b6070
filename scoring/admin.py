from django import forms
from django.contrib import admin

from onlinescore.exceptions import ValidationError
from projects.admin import ReadOnlyAdmin
from scoring import services
from scoring.models import Function, FunctionVersion, LLMEndpoint, Rule, ScoringRun, SpanDecisions


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
        current = None
        if self.instance.pk and not {"scorers", "project"} & set(self.changed_data):
            # As a PATCH without scorers: the rule can be disabled even if a scorer is gone.
            current = services.rule_online_config(self.instance)
            online.pop("scorers", None)
        try:
            project = data.get("project")
            data.update(
                services.online_config_clean(
                    online, current=current, organization=project.organization if project else None
                )
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
    fields = ["span", "project", "ended_at", "decisions", "errors"]
    readonly_fields = fields

    @admin.display(description="decisions (rule id: decision)")
    def decisions(self, record: SpanDecisions) -> dict:
        return record.decisions


class FunctionVersionInline(admin.TabularInline):
    model = FunctionVersion
    fields = ["version", "function_data", "prompt_data", "created_by", "created"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-version"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Function)
class FunctionAdmin(admin.ModelAdmin):
    """Custom scorers, with every version. Code and prompts change on the Scorers page or the
    API, where each change is checked and becomes a new version: here they can be read and
    the scorer deleted."""

    list_display = ["name", "slug", "project", "function_type", "created_by", "updated"]
    list_filter = ["project"]
    search_fields = ["name", "slug", "description"]
    readonly_fields = [
        "project",
        "name",
        "slug",
        "description",
        "function_type",
        "created_by",
        "created",
        "updated",
    ]
    inlines = [FunctionVersionInline]

    def has_add_permission(self, request):
        return False


class LLMEndpointForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, assume_scheme="https")
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput,
        help_text="Stored encrypted and never shown. Leave empty to keep the current key.",
    )

    class Meta:
        model = LLMEndpoint
        fields = ["organization", "base_url", "default_model"]

    def clean(self):
        """Checked by the same service as the API: the host is one endpoints may reach, and the
        stored key is given again with a new address."""
        data = super().clean()
        if data.get("base_url"):
            # Before this form's values are put on it, the instance is the endpoint as stored.
            current = self.instance if self.instance.pk else None
            try:
                services.llm_endpoint_check(
                    data["base_url"], current=current, api_key=data.get("api_key") or None
                )
            except ValidationError as exc:
                self.add_error(exc.details["field"], exc.message)
        return data


@admin.register(LLMEndpoint)
class LLMEndpointAdmin(admin.ModelAdmin):
    """An organization's OpenAI-compatible endpoint for LLM-backed scorers, set through the same
    service as PUT /v1/llm_endpoint (which encrypts the key)."""

    form = LLMEndpointForm
    list_display = ["organization", "base_url", "default_model", "updated"]

    def get_readonly_fields(self, request, obj=None):
        return ["organization"] if obj else []

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        form.instance = services.llm_endpoint_set(
            organization=obj.organization,
            base_url=data["base_url"],
            default_model=data["default_model"],
            api_key=data["api_key"] or None,
        )
