import re

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from projects.selectors import FETCH_DEFAULT_LIMIT, FETCH_MAX_LIMIT


class FetchSerializer(serializers.Serializer):
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=FETCH_MAX_LIMIT, default=FETCH_DEFAULT_LIMIT
    )
    cursor = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    filter = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text="A BTQL filter expression",
    )


class FetchResultSerializer(serializers.Serializer):
    events = serializers.ListField(child=serializers.DictField())
    cursor = serializers.CharField(allow_null=True)


class BTQLSerializer(serializers.Serializer):
    query = serializers.CharField(
        trim_whitespace=False, help_text="select: * | from: project_logs('<id>') | filter: ..."
    )
    fmt = serializers.ChoiceField(choices=["json"], required=False)


class BTQLResultSerializer(serializers.Serializer):
    data = serializers.ListField(child=serializers.DictField())
    cursor = serializers.CharField(allow_null=True)


# --- Online scoring rules (Braintrust's project score, score_type "online") ---------------

_REFERENCE = '{"type": "global", "name": "ExactMatch"} or {"type": "function", "id": ..., "version"?: ...}'


class OnlineConfigSerializer(serializers.Serializer):
    sampling_rate = serializers.FloatField(min_value=0, max_value=1, required=False, help_text="0 to 1")
    scorers = serializers.ListField(child=serializers.DictField(help_text=_REFERENCE), required=False)
    btql_filter = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, trim_whitespace=False
    )
    apply_to_root_span = serializers.BooleanField(required=False, allow_null=True)
    apply_to_span_names = serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True
    )
    enabled = serializers.BooleanField(required=False, allow_null=True)
    sample_by = serializers.ChoiceField(choices=["span", "trace"], required=False, allow_null=True)


class RuleConfigSerializer(serializers.Serializer):
    online = OnlineConfigSerializer()


class RuleWriteSerializer(serializers.Serializer):
    project_id = serializers.UUIDField()
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    score_type = serializers.ChoiceField(choices=["online"], required=False, default="online")
    config = RuleConfigSerializer()
    categories = serializers.JSONField(required=False, allow_null=True)

    def validate_categories(self, value):
        if value is not None:
            raise serializers.ValidationError("Online rules have no categories.")
        return value


class RulePatchSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    config = RuleConfigSerializer(required=False)


class RuleTestSerializer(RuleWriteSerializer):
    name = serializers.CharField(max_length=200, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=100, required=False, default=20)


class RuleListQuerySerializer(serializers.Serializer):
    project_id = serializers.UUIDField(required=False)
    project_score_name = serializers.CharField(required=False)


class RuleSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    project_id = serializers.UUIDField()
    user_id = serializers.CharField(source="run_as_user_id", allow_null=True)
    created = serializers.DateTimeField()
    name = serializers.CharField()
    description = serializers.CharField()
    score_type = serializers.SerializerMethodField()
    categories = serializers.SerializerMethodField()
    config = serializers.SerializerMethodField()
    position = serializers.SerializerMethodField()

    def get_score_type(self, rule) -> str:
        return "online"

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_categories(self, rule):
        return None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_position(self, rule):
        return None

    def get_config(self, rule) -> dict:
        return {
            "online": {
                "sampling_rate": rule.sampling_rate,
                "scorers": rule.scorers,
                "btql_filter": rule.btql_filter or None,
                "apply_to_root_span": rule.apply_to_root_span,
                "apply_to_span_names": rule.apply_to_span_names,
                "enabled": rule.enabled,
                "sample_by": rule.sample_by,
            }
        }


class ScoreLogsSerializer(serializers.Serializer):
    scorers = serializers.ListField(child=serializers.DictField(help_text=_REFERENCE))
    ids = serializers.ListField(child=serializers.CharField(), required=False, min_length=1, max_length=1000)
    filter = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    limit = serializers.IntegerField(min_value=1, required=False)

    def validate_limit(self, value):
        if value > settings.SCORING_PAST_LOGS_MAX:
            raise serializers.ValidationError(f"At most {settings.SCORING_PAST_LOGS_MAX}.")
        return value


class ScoringStateQuerySerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The row id of the span")


# 500 ids of 7 digits, URL-encoded, fit the request line gunicorn accepts (see serve.web_command).
RUNS_PER_REQUEST = 500


class RunListQuerySerializer(serializers.Serializer):
    ids = serializers.CharField(help_text="Comma-separated scoring run ids")

    def validate_ids(self, value):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        # Digits only: int() would also read "+1", "1_0" and other scripts' digits.
        if not all(re.fullmatch(r"[0-9]+", part) for part in parts):
            raise serializers.ValidationError("ids are comma-separated integers.")
        ids = [int(part) for part in parts]
        if any(not 0 < run_id < 2**63 for run_id in ids):
            raise serializers.ValidationError("ids are positive 64-bit integers.")
        if not ids or len(ids) > RUNS_PER_REQUEST:
            raise serializers.ValidationError(f"Give between 1 and {RUNS_PER_REQUEST} ids.")
        return ids


# --- Custom scorers (functions) and the LLM endpoint ---------------------------------------


class FunctionWriteSerializer(serializers.Serializer):
    project_id = serializers.UUIDField()
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    function_type = serializers.ChoiceField(choices=["scorer"], required=False, default="scorer")
    function_data = serializers.DictField(help_text='{"type": "code", "data": {...}} or {"type": "prompt"}')
    prompt_data = serializers.DictField(required=False, allow_null=True)


class FunctionPatchSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    function_data = serializers.DictField(required=False)
    prompt_data = serializers.DictField(required=False)


class FunctionListQuerySerializer(serializers.Serializer):
    project_id = serializers.UUIDField(required=False)
    slug = serializers.CharField(required=False)
    function_name = serializers.CharField(required=False)


class FunctionInvokeSerializer(serializers.Serializer):
    input = serializers.JSONField(required=False, allow_null=True)
    output = serializers.JSONField(required=False, allow_null=True)
    expected = serializers.JSONField(required=False, allow_null=True)
    metadata = serializers.JSONField(required=False, allow_null=True)
    version = serializers.IntegerField(required=False, min_value=1)


class LLMEndpointSerializer(serializers.Serializer):
    base_url = serializers.URLField(max_length=500)
    api_key = serializers.CharField(required=False, allow_blank=True, write_only=True, trim_whitespace=False)
    default_model = serializers.CharField(max_length=200)
