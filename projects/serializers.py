from rest_framework import serializers

from projects.models import Project


class ProjectSerializer(serializers.ModelSerializer):
    org_id = serializers.UUIDField(source="organization_id", read_only=True)
    user_id = serializers.IntegerField(source="created_by_id", read_only=True)

    class Meta:
        model = Project
        fields = ["id", "org_id", "name", "description", "created", "user_id"]


class ProjectListQuerySerializer(serializers.Serializer):
    project_name = serializers.CharField(required=False)


class ProjectCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, allow_null=True, default="")
    org_name = serializers.CharField(required=False, allow_null=True)
    project_group_name = serializers.CharField(required=False, allow_null=True)

    def validate_project_group_name(self, value):
        if value:
            raise serializers.ValidationError("Project groups are not supported.")
        return value


class ProjectRegisterSerializer(serializers.Serializer):
    project_name = serializers.CharField(max_length=200)
    org_id = serializers.CharField(required=False, allow_null=True)


class Logs3Serializer(serializers.Serializer):
    """The body of POST /logs3, as the SDK sends it; the rows are checked one by one."""

    rows = serializers.ListField()
    api_version = serializers.IntegerField(required=False, help_text="2")


class InsertSerializer(serializers.Serializer):
    """Documentation of POST /v1/project_logs/{id}/insert; the body is validated row by row."""

    events = serializers.ListField(child=serializers.DictField())


class RowIdsSerializer(serializers.Serializer):
    row_ids = serializers.ListField(child=serializers.CharField())
