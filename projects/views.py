"""The web UI's navigation: the organizations and projects a signed-in user can open, and the
base every project page is built on. Pages check the same permissions as the API, through the
same selectors, with the user acting in the project's organization (an API principal without
a key)."""

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.views.generic import TemplateView

from onlinescore.exceptions import Forbidden
from projects.auth import Principal, principal_of
from projects.models import Membership, Project
from projects.selectors import project_check, project_list


def organizations_of(user) -> list[dict]:
    """Each organization the user belongs to, with the projects they may read there."""
    organizations = []
    for membership in (
        Membership.objects.select_related("organization").filter(user=user).order_by("organization__name")
    ):
        principal = Principal(key=None, user=user, organization=membership.organization, role=membership.role)
        organizations.append(
            {"organization": membership.organization, "projects": list(project_list(principal=principal))}
        )
    return organizations


class HomePage(LoginRequiredMixin, TemplateView):
    template_name = "projects/home.html"

    def get_context_data(self, **kwargs):
        return super().get_context_data(organizations=organizations_of(self.request.user), **kwargs)


class ProjectPage(LoginRequiredMixin, TemplateView):
    """A page of one project. `permission` on `object_type` is checked for every method, as
    the API checks it: another organization's project (or a malformed id) is a 404, a
    project the user cannot read a 403."""

    object_type = "project_logs"
    permission = "read"
    tab = ""

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        # Read once: the project's organization decides who the user is there.
        project = Project.objects.select_related("organization").filter(pk=kwargs["project_id"]).first()
        principal = project and principal_of(request.user, None, project.organization)
        if principal is None:
            raise Http404("No such project.")
        self.project, self.principal = project, principal
        # The page's own permission, then whatever else it reads (the rules need read on the
        # project itself): a refusal is a 403 page.
        try:
            project_check(
                principal=principal, project=project, object_type=self.object_type, permission=self.permission
            )
            return super().dispatch(request, *args, **kwargs)
        except Forbidden as error:
            raise PermissionDenied(error.message) from None

    def get_context_data(self, **kwargs):
        return super().get_context_data(
            project=self.project,
            organization=self.project.organization,
            organizations=organizations_of(self.request.user),
            tab=self.tab,
            **kwargs,
        )
