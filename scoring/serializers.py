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
