import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person or a service account. Service accounts own API keys but never log in."""

    email = models.EmailField(unique=True)
    is_service_account = models.BooleanField(default=False)


class Organization(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="one_membership_per_org")
        ]

    def __str__(self):
        return f"{self.user} in {self.organization} ({self.role})"


class Project(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="project_name_unique_in_org")
        ]
        ordering = ["name"]

    def __str__(self):
        return self.name


class ProjectGrant(models.Model):
    """One permission of one user on one project (owners of the organization need none)."""

    class ObjectType(models.TextChoices):
        PROJECT = "project"
        PROJECT_LOGS = "project_logs"

    class Permission(models.TextChoices):
        READ = "read"
        UPDATE = "update"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="grants")
    object_type = models.CharField(max_length=20, choices=ObjectType.choices)
    permission = models.CharField(max_length=10, choices=Permission.choices)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user", "object_type", "permission"], name="grant_unique"
            )
        ]

    def __str__(self):
        return f"{self.user}: {self.permission} {self.object_type} of {self.project}"


class APIKey(models.Model):
    """An API key of one user in one organization.

    The raw key is `os_<prefix>_<secret>` and is shown once. Only the prefix (to find the row)
    and the SHA-256 of the whole key (to check it in constant time) are stored: keys are long
    random strings, so a fast hash is enough and a slow one would only slow down every request.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True, default="")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self):
        return f"os_{self.prefix}_… ({self.user})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Transaction(models.Model):
    """One ingest write. Its id is the `_xact_id` of every row the write changed: a
    server-assigned number that only grows, on any database backend."""

    id = models.BigAutoField(primary_key=True)
    created = models.DateTimeField(auto_now_add=True)


class Span(models.Model):
    """One row of project logs, shaped like Braintrust's log event.

    `row_id` is the client's `id` (opaque: a UUID, OTel hex or anything else); `name`, `type`
    and `is_root` are copies of `span_attributes.name|type` and of "no parents", kept in
    columns so that they can be indexed.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="spans")
    row_id = models.CharField(max_length=255)
    span_id = models.CharField(max_length=255)
    root_span_id = models.CharField(max_length=255)
    span_parents = models.JSONField(null=True, blank=True)
    is_root = models.BooleanField(default=True)
    name = models.CharField(max_length=255, blank=True, default="")
    type = models.CharField(max_length=64, blank=True, default="")
    span_attributes = models.JSONField(default=dict, blank=True)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    expected = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    scores = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(null=True, blank=True)
    metrics = models.JSONField(null=True, blank=True)
    tags = models.JSONField(null=True, blank=True)
    context = models.JSONField(null=True, blank=True)
    origin = models.JSONField(null=True, blank=True)
    created = models.DateTimeField()
    xact_id = models.BigIntegerField()
    ended_at = models.DateTimeField(null=True, blank=True)
    deleted = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "row_id"], name="span_row_id_unique_in_project")
        ]
        indexes = [
            models.Index(fields=["project", "-created", "-id"], name="span_project_created"),
            models.Index(fields=["project", "root_span_id"], name="span_project_root"),
            models.Index(fields=["project", "span_id"], name="span_project_span"),
            models.Index(fields=["project", "is_root", "-created"], name="span_project_is_root"),
            models.Index(fields=["project", "name"], name="span_project_name"),
            models.Index(fields=["project", "type"], name="span_project_type"),
        ]

    def __str__(self):
        return f"{self.name or 'span'} {self.row_id}"


class Comment(models.Model):
    """A comment row (`comment` + `origin.id`) attached to the span whose row id is `origin.id`.

    The span may arrive after its comment, so the link is the row id, not a foreign key."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comments")
    row_id = models.CharField(max_length=255)
    span_row_id = models.CharField(max_length=255)
    comment = models.JSONField()
    origin = models.JSONField()
    created = models.DateTimeField()
    xact_id = models.BigIntegerField()
    deleted = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "row_id"], name="comment_row_id_unique_in_project")
        ]
        indexes = [models.Index(fields=["project", "span_row_id"], name="comment_project_span")]

    def __str__(self):
        return f"comment on {self.span_row_id}"
