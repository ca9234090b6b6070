"""Writes to tenancy: organizations, members, projects and API keys."""

import secrets

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from onlinescore.exceptions import Forbidden, NotFound, ValidationError
from projects.auth import Principal, has_permission, key_generate
from projects.models import APIKey, Membership, Organization, Project, User


def user_get_or_create(*, email: str, service_account: bool = False) -> User:
    """The user with this email, or this login ("admin", as the first run prints it); else a
    new user whose login is the email."""
    user = User.objects.filter(Q(email__iexact=email) | Q(username=email)).order_by("pk").first()
    if user is None:
        if "@" not in email:
            raise ValidationError(
                f"No user has the login {email!r}; give an email to create one.", field="user"
            )
        user = User.objects.create_user(username=email, email=email, is_service_account=service_account)
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def membership_set(*, organization: Organization, user: User, role: str | None = None) -> Membership:
    """Make `user` a member of `organization`; `role` changes the role of an existing member."""
    membership, created = Membership.objects.get_or_create(
        organization=organization, user=user, defaults={"role": role or Membership.Role.MEMBER}
    )
    if not created and role and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def api_key_create(*, organization: Organization, user: User, name: str = "") -> tuple[APIKey, str]:
    """A new key for a member of `organization`. Returns the row and the raw key (shown once)."""
    if not Membership.objects.filter(organization=organization, user=user).exists():
        raise ValidationError(f"{user} is not a member of {organization}.", field="user")
    raw, prefix, digest = key_generate()
    key = APIKey.objects.create(organization=organization, user=user, name=name, prefix=prefix, digest=digest)
    return key, raw


@transaction.atomic
def api_key_provision(
    *, org_name: str, email: str, role: str | None = None, service_account: bool = False, name: str = ""
) -> tuple[APIKey, str]:
    """Create whatever is missing (organization, user, membership) and a new key."""
    organization, _ = Organization.objects.get_or_create(name=org_name)
    user = user_get_or_create(email=email, service_account=service_account)
    membership_set(organization=organization, user=user, role=role)
    return api_key_create(organization=organization, user=user, name=name)


def api_key_revoke(*, key: APIKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


def project_get_or_create(
    *,
    principal: Principal,
    name: str,
    description: str = "",
    org_name: str | None = None,
    org_id: str | None = None,
) -> tuple[Project, bool]:
    """The project named `name` in the principal's organization, created if missing.

    `org_name`/`org_id`, as SDKs send them, must name the key's organization (else 404).
    Reading an existing project needs `read` on it; creating one needs to be an owner."""
    organization = principal.organization
    if (org_name and org_name != organization.name) or (org_id and org_id != str(organization.pk)):
        raise NotFound("Organization not found.", field="org_name" if org_name else "org_id")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("name must be a non-empty string.", field="name")
    if len(name) > Project._meta.get_field("name").max_length:
        raise ValidationError("name is too long (200 characters at most).", field="name")
    project = Project.objects.filter(organization=principal.organization, name=name).first()
    if project is not None:
        if not has_permission(principal, project, "project", "read"):
            raise Forbidden(f"Missing 'read' permission on project {name!r}.")
        return project, False
    if not principal.is_owner:
        raise Forbidden("Only owners of the organization can create projects.")
    try:
        with transaction.atomic():
            project = Project.objects.create(
                organization=principal.organization,
                name=name,
                description=description,
                created_by=principal.user,
            )
    except IntegrityError:  # created by a concurrent request: return that one
        return Project.objects.get(organization=principal.organization, name=name), False
    return project, True


def project_delete(*, project: Project) -> None:
    """Delete the project with all its logs. There is no undo."""
    project.delete()


@transaction.atomic
def instance_bootstrap(*, org_name: str = "default", admin_email: str = "admin@localhost") -> dict | None:
    """First run of a new instance: an organization, an admin who owns it, and an API key.

    Returns the credentials to show once, or None when the instance already has users."""
    if User.objects.exists():
        return None
    organization = Organization.objects.create(name=org_name)
    password = secrets.token_urlsafe(12)
    admin = User.objects.create_superuser(username="admin", email=admin_email, password=password)
    membership_set(organization=organization, user=admin, role=Membership.Role.OWNER)
    _, raw = api_key_create(organization=organization, user=admin, name="created at first run")
    return {"organization": org_name, "username": "admin", "password": password, "api_key": raw}
