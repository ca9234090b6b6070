from django.core.management.base import BaseCommand, CommandError

from onlinescore.exceptions import ApplicationError
from projects.models import Membership
from projects.services import api_key_provision


class Command(BaseCommand):
    help = (
        "Create an API key for a user of an organization, creating the organization, the user and "
        "the membership if missing. The raw key is the last line of the output."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="Organization name")
        parser.add_argument("--user", required=True, help="User email, or the login of an existing user")
        parser.add_argument(
            "--role", choices=Membership.Role.values, help="Role in the organization (new members: member)"
        )
        parser.add_argument("--service-account", action="store_true", help="A new user is a service account")
        parser.add_argument("--name", default="", help="A label for the key")

    def handle(self, *args, org, user, role, service_account, name, **options):
        try:
            key, raw = api_key_provision(
                org_name=org, email=user, role=role, service_account=service_account, name=name
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        membership = Membership.objects.get(organization=key.organization, user=key.user)
        self.stdout.write(
            f"API key for {key.user.email} ({membership.role} of {key.organization.name}). It is shown once:"
        )
        self.stdout.write(raw)
