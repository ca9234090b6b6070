"""Custom scorers (functions: code run in the sandbox, or LLM-as-a-judge prompts) and the
organization's LLM endpoint."""

import chevron.tokenizer
from django.db import IntegrityError, transaction

from onlinescore.exceptions import ValidationError
from projects.auth import Principal
from projects.models import Project
from scoring import scorers, selectors
from scoring.models import Function, FunctionVersion, LLMEndpoint
from scoring.scorers import egress, llm

_RUNTIMES = {"python": "python", "node": "node"}
CODE_MAX_BYTES = 256 * 1024


def function_data_clean(function_data: dict, prompt_data: dict | None) -> tuple[dict, dict | None]:
    """Check what a scorer function runs: inline code (python or node) or an LLM judge prompt."""
    kind = function_data.get("type")
    if kind == "code":
        _refuse_unknown(function_data, {"type", "data"}, "function_data")
        data = function_data.get("data")
        if not isinstance(data, dict) or data.get("type") != "inline":
            raise ValidationError('Code scorers are {"type": "inline", "runtime_context": ..., "code": ...}.',
                                  field="function_data.data")  # fmt: skip
        _refuse_unknown(data, {"type", "runtime_context", "code"}, "function_data.data")
        if not isinstance(data.get("runtime_context"), dict):
            raise ValidationError(
                "runtime_context is {runtime, version}.", field="function_data.data.runtime_context"
            )
        _refuse_unknown(data["runtime_context"], {"runtime", "version"}, "function_data.data.runtime_context")
        runtime = data["runtime_context"].get("runtime")
        if runtime not in _RUNTIMES:
            raise ValidationError(
                "runtime is python or node.", field="function_data.data.runtime_context.runtime"
            )
        code = data.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ValidationError("The code is empty.", field="function_data.data.code")
        if len(code.encode()) > CODE_MAX_BYTES:
            raise ValidationError(
                f"The code is over {CODE_MAX_BYTES:,} bytes.", field="function_data.data.code"
            )
        if runtime == "python":
            try:
                compile(code, "<scorer>", "exec")  # compiling runs nothing
            except (MemoryError, RecursionError):
                raise ValidationError(
                    "The code is too deeply nested to compile.", field="function_data.data.code"
                ) from None
            except SyntaxError as exc:
                raise ValidationError(
                    f"Syntax error: {exc.msg} (line {exc.lineno}).", field="function_data.data.code",
                    line=exc.lineno, column=exc.offset,
                ) from None  # fmt: skip
        version = (data.get("runtime_context") or {}).get("version")
        clean = {"type": "inline", "runtime_context": {"runtime": runtime, "version": version}, "code": code}
        if prompt_data is not None:
            raise ValidationError("A code scorer has no prompt_data.", field="prompt_data")
        return {"type": "code", "data": clean}, None
    if kind == "prompt":
        _refuse_unknown(function_data, {"type"}, "function_data")
        return {"type": "prompt"}, _prompt_data_clean(prompt_data)
    raise ValidationError('function_data.type is "code" or "prompt".', field="function_data.type")


def _refuse_unknown(value: dict, allowed: set[str], field: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValidationError(f"Unknown field {unknown[0]!r}.", field=f"{field}.{unknown[0]}")


def _prompt_data_clean(prompt_data: dict | None) -> dict:
    if not isinstance(prompt_data, dict):
        raise ValidationError(
            "An LLM judge needs prompt_data {prompt, options, parser}.", field="prompt_data"
        )
    _refuse_unknown(prompt_data, {"prompt", "options", "parser"}, "prompt_data")
    prompt = prompt_data.get("prompt")
    messages = prompt.get("messages") if isinstance(prompt, dict) else None
    if (
        not isinstance(prompt, dict)
        or prompt.get("type") != "chat"
        or not isinstance(messages, list)
        or not messages
    ):
        raise ValidationError('prompt is {"type": "chat", "messages": [...]}.', field="prompt_data.prompt")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ("system", "user", "assistant")
            or not isinstance(message.get("content"), str)
        ):
            raise ValidationError("A message is {role: system|user|assistant, content: text}.",
                                  field=f"prompt_data.prompt.messages[{i}]")  # fmt: skip
        _refuse_unknown(message, {"role", "content"}, f"prompt_data.prompt.messages[{i}]")
        try:
            list(chevron.tokenizer.tokenize(message["content"]))  # as the judge renders it
        except chevron.tokenizer.ChevronError as exc:
            raise ValidationError(
                f"The message's template does not parse: {' '.join(str(exc).split())}.",
                field=f"prompt_data.prompt.messages[{i}].content",
            ) from None
    _refuse_unknown(prompt, {"type", "messages"}, "prompt_data.prompt")
    options = prompt_data.get("options") or {}
    if (
        not isinstance(options, dict)
        or not isinstance(options.get("model", ""), str)
        or not isinstance(options.get("params", {}), dict)
    ):
        raise ValidationError("options is {model, params}.", field="prompt_data.options")
    _refuse_unknown(options, {"model", "params"}, "prompt_data.options")
    parser = prompt_data.get("parser")
    if not isinstance(parser, dict) or parser.get("type") != "llm_classifier":
        raise ValidationError('parser is {"type": "llm_classifier", ...}.', field="prompt_data.parser")
    choices = parser.get("choice_scores")
    if (
        not isinstance(choices, dict)
        or not choices
        or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1
            for v in choices.values()
        )
    ):
        raise ValidationError("choice_scores maps each choice to a score between 0 and 1.",
                              field="prompt_data.parser.choice_scores")  # fmt: skip
    if not isinstance(parser.get("use_cot", True), bool):
        raise ValidationError("use_cot is true or false.", field="prompt_data.parser.use_cot")
    _refuse_unknown(parser, {"type", "use_cot", "choice_scores"}, "prompt_data.parser")
    return {
        "prompt": {
            "type": "chat",
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        },
        "options": options,
        "parser": {
            "type": "llm_classifier",
            "use_cot": parser.get("use_cot", True),
            "choice_scores": choices,
            "choice_order": list(choices),  # jsonb (PostgreSQL) does not keep key order
        },
    }


def function_get_or_create(*, principal: Principal, project: Project, name: str, slug: str, description: str,
                           function_data: dict, prompt_data: dict | None) -> Function:  # fmt: skip
    """A new function at version 1, or, as in Braintrust, the project's function with this slug
    unchanged."""
    existing = Function.objects.filter(project=project, slug=slug).first()
    if existing is not None:
        return existing
    function_data, prompt_data = function_data_clean(function_data, prompt_data)
    try:
        return _function_create(principal, project, name, slug, description, function_data, prompt_data)
    except IntegrityError:  # created meanwhile by another request
        return Function.objects.get(project=project, slug=slug)


def _function_create(principal, project, name, slug, description, function_data, prompt_data) -> Function:
    with transaction.atomic():
        function = Function.objects.create(
            project=project,
            name=name.strip(),
            slug=slug,
            description=description or "",
            created_by=principal.user,
        )
        FunctionVersion.objects.create(
            function=function, version=1, function_data=function_data, prompt_data=prompt_data,
            created_by=principal.user,
        )  # fmt: skip
    return function


def function_update(*, principal: Principal, function: Function, name: str | None = None,
                    description: str | None = None, function_data: dict | None = None,
                    prompt_data: dict | None = None) -> Function:  # fmt: skip
    """Rename or describe a function, or give it a new version: versions never change."""
    with transaction.atomic():
        function = Function.objects.select_for_update().get(pk=function.pk)
        if name is not None:
            function.name = name.strip()
        if description is not None:
            function.description = description
        function.save()
        if function_data is not None or prompt_data is not None:
            latest = function.versions.order_by("-version").first()
            data, prompt = function_data_clean(
                function_data if function_data is not None else latest.function_data,
                prompt_data if prompt_data is not None else latest.prompt_data,
            )
            if (data, prompt) != (latest.function_data, latest.prompt_data):
                FunctionVersion.objects.create(
                    function=function, version=latest.version + 1, function_data=data, prompt_data=prompt,
                    created_by=principal.user,
                )  # fmt: skip
    return function


def function_delete(*, function: Function) -> None:
    function.delete()


def function_invoke(
    *, principal: Principal, function: Function, arguments: dict, version: int | None
) -> dict:
    """Run a scorer function on the given input, output, expected and metadata, through the
    same code as live runs: {"scores", "metadata", "metrics", "error"}."""
    ref = {
        "type": "function",
        "id": str(function.pk),
        **({"version": version} if version is not None else {}),
    }
    try:
        scorer = scorers.resolve(ref, organization=function.project.organization, principal=principal)
    except scorers.ScorerError as exc:
        raise ValidationError(str(exc), field="version" if version is not None else None) from None
    outcome = scorers.run(scorer, arguments)
    return {
        "scores": outcome.scores,
        "metadata": outcome.metadata,
        "metrics": outcome.metrics,
        "error": outcome.error,
    }


def llm_endpoint_set(*, organization, base_url: str, default_model: str, api_key: str | None) -> LLMEndpoint:
    """Set the organization's LLM endpoint; `api_key` None keeps the stored one."""
    current = selectors.llm_endpoint_get(organization=organization)
    llm_endpoint_check(base_url, current=current, api_key=api_key)
    endpoint = current or LLMEndpoint(organization=organization)
    endpoint.base_url, endpoint.default_model = base_url, default_model
    if api_key is not None:
        endpoint.api_key_encrypted = llm.encrypt(api_key)
    endpoint.save()
    return endpoint


def llm_endpoint_check(base_url: str, *, current: LLMEndpoint | None, api_key: str | None) -> None:
    """ValidationError if the organization's endpoint, `current` as stored (None: none yet), may
    not become this: its host is not one an organization's endpoint may reach, or it would move
    the stored key (`api_key` None keeps it) to another address, which would then receive it:
    whoever changes the address gives the key."""
    try:
        egress.check_url(base_url)
    except egress.BlockedAddress as exc:
        raise ValidationError(str(exc), field="base_url") from None
    if api_key is None and current is not None and current.api_key_encrypted and current.base_url != base_url:
        raise ValidationError(
            "Give the API key again with a new base URL: the stored key is only sent where it was set for.",
            field="api_key",
        )


def llm_endpoint_delete(*, organization) -> None:
    LLMEndpoint.objects.filter(organization=organization).delete()
