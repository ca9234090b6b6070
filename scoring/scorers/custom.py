"""Custom scorers: a project's functions (code run in the sandbox, or LLM-as-a-judge prompts),
referenced as `{"type": "function", "id": ..., "version"?: ...}`. Without a version, the latest."""

import uuid

from projects.auth import has_permission
from scoring.scorers import Scorer, ScorerError, llm, sandbox


def version_get(ref: dict, organization):
    """The function version a reference names, in the organization."""
    from scoring.models import FunctionVersion

    try:
        function_id = uuid.UUID(str(ref.get("id")))
    except ValueError:
        raise ScorerError(f"Unknown function {ref.get('id')!r}: no custom scorer has this id.") from None
    versions = FunctionVersion.objects.select_related("function__project").filter(function_id=function_id)
    if organization is not None:
        versions = versions.filter(function__project__organization=organization)
    if ref.get("version") is not None:
        version = versions.filter(version=ref["version"]).first()
        if version is None and versions.exists():
            raise ScorerError(f"Function {function_id} has no version {ref['version']!r}.")
    else:
        version = versions.order_by("-version").first()
    if version is None:
        raise ScorerError(f"Unknown function {ref.get('id')!r}: no custom scorer has this id.")
    return version


def resolve(ref: dict, *, organization=None, principal=None, project=None) -> Scorer:
    version = version_get(ref, organization)
    function = version.function
    if principal is not None and not has_permission(principal, function.project, "project", "read"):
        who = principal.user.email or principal.user.username
        raise ScorerError(
            f"Scorer {function.name!r} belongs to project {function.project.name!r}, which {who} cannot read."
        )
    return scorer_of(version, project=project or function.project)


def scorer_of(version, *, project) -> Scorer:
    """The scorer of a function version, scoring spans of `project`."""
    function = version.function
    data = version.function_data
    if data["type"] == "code":
        runtime = data["data"]["runtime_context"]["runtime"]
        code = data["data"]["code"]
        # One warm process per function and scored project: code never shares a process with
        # other code, nor sees spans of another project.
        tenant = f"{project.pk}:{function.pk}"

        def run_code(**arguments):
            return sandbox.pool.run(runtime, code, arguments, tenant=tenant)

        return Scorer(name=function.name, fn=run_code, requires=("output",))
    endpoint = llm.require_endpoint(function.project.organization)
    return Scorer(
        name=function.name, fn=llm.judge(version.prompt_data, endpoint), requires=("output",), needs_llm=True
    )
