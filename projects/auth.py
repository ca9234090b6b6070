"""API-key authentication and the per-project permission check.

Every API request carries `Authorization: Bearer <key>`. The key decides the user *and* the
organization: a request never sees anything outside the key's organization.
"""

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from projects.models import APIKey, Membership, Organization, Project, ProjectGrant, User

KEY_PREFIX = "os"
_PREFIX_BYTES = 6  # 12 hex characters: enough to find the row, useless without the secret
_LAST_USED_RESOLUTION = timedelta(minutes=1)
_KEY_SHAPE = re.compile(rf"{KEY_PREFIX}_[0-9a-f]{{{2 * _PREFIX_BYTES}}}_[A-Za-z0-9_-]{{20,100}}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its user and organization, and the user's role there."""

    key: APIKey | None  # None for a signed-in user (the web UI)
    user: User
    organization: Organization
    role: str

    @property
    def is_owner(self) -> bool:
        return self.role == Membership.Role.OWNER


def key_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def key_generate() -> tuple[str, str, str]:
    """A new raw key and what is stored of it: (raw, prefix, digest)."""
    prefix = secrets.token_hex(_PREFIX_BYTES)
    raw = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return raw, prefix, key_digest(raw)


def principal_from_key(raw: str) -> Principal | None:
    """The principal of an active key, or None. Runs in constant time in the secret."""
    if not _KEY_SHAPE.fullmatch(raw):
        return None
    parts = raw.split("_", 2)
    key = APIKey.objects.select_related("user", "organization").filter(prefix=parts[1]).first()
    # Compare a digest even when there is no row, so timing does not tell prefixes apart.
    expected = key.digest if key else key_digest("")
    if not hmac.compare_digest(expected, key_digest(raw)) or key is None:
        return None
    if not key.is_active or not key.user.is_active:
        return None
    role = (
        Membership.objects.filter(organization=key.organization, user=key.user)
        .values_list("role", flat=True)
        .first()
    )
    if role is None:
        return None
    now = timezone.now()
    if key.last_used is None or now - key.last_used > _LAST_USED_RESOLUTION:
        APIKey.objects.filter(pk=key.pk).update(last_used=now)
    return Principal(key=key, user=key.user, organization=key.organization, role=role)


class APIKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`. No header: anonymous (then 401); a bad key: 401."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword.lower().encode() or len(header) != 2:
            raise exceptions.AuthenticationFailed("Expected 'Authorization: Bearer <api key>'.")
        try:
            raw = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        principal = principal_from_key(raw)
        if principal is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return principal.user, principal

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class SessionAuthentication(authentication.SessionAuthentication):
    """A signed-in browser (the web UI's scripts). CSRF is enforced on writes by DRF's base class.

    A user may belong to several organizations, and a principal acts in one: the page sends its
    organization in `X-Organization`. Without it, a user in exactly one organization acts there.
    """

    def authenticate(self, request):
        authenticated = super().authenticate(request)
        if authenticated is None:
            return None
        user = authenticated[0]
        memberships = Membership.objects.select_related("organization").filter(user=user)
        wanted = request.headers.get("X-Organization")
        if wanted:
            memberships = memberships.filter(organization_id=_uuid_or_none(wanted))
        memberships = list(memberships[:2])
        if len(memberships) != 1:
            raise exceptions.AuthenticationFailed(
                "Send X-Organization with the id of one of your organizations."
                if not wanted
                else f"You are not a member of organization {wanted}."
            )
        membership = memberships[0]
        return user, Principal(
            key=None, user=user, organization=membership.organization, role=membership.role
        )

    def enforce_csrf(self, request):
        # The check reads the form body of a POST; our views parse their own bodies (no DRF
        # parsers), so give it Django's request, whose POST is empty for a JSON body.
        super().enforce_csrf(request._request)


def _uuid_or_none(text: str):
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def principal_of(user: User | None, key: APIKey | None, organization: Organization) -> Principal | None:
    """Whom something made earlier (a rule, a scoring request) acts as now: None if the user is
    gone, inactive or no longer a member, or the key was revoked."""
    if user is None or not user.is_active or (key is not None and not key.is_active):
        return None
    role = (
        Membership.objects.filter(organization=organization, user=user).values_list("role", flat=True).first()
    )
    return None if role is None else Principal(key=key, user=user, organization=organization, role=role)


def has_permission(principal: Principal, project: Project, object_type: str, permission: str) -> bool:
    if project.organization_id != principal.organization.pk:
        return False
    if principal.is_owner:
        return True
    return ProjectGrant.objects.filter(
        project=project, user=principal.user, object_type=object_type, permission=permission
    ).exists()
