"""LLM-backed scorers: autoevals' LLM scorers and LLM-as-a-judge prompts, through an
organization's OpenAI-compatible endpoint (or OPENAI_BASE_URL / OPENAI_API_KEY).

Our timeout and retry policy replaces the library's: the client makes one attempt with
SCORING_LLM_TIMEOUT, autoevals' own retry on rate limits (up to 100 tries) is switched off, and
a 429, a 5xx, a timeout or a network error becomes a TransientScorerError, which the run retries
with back-off (services.runs_execute). So a rate-limited endpoint cannot stall a worker.

An organization's endpoint connects only to the addresses egress.py allows.
"""

import base64
import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from functools import lru_cache

import chevron
import chevron.renderer
from django.conf import settings

from scoring.scorers import ScorerError, TransientScorerError, egress

# Prompts are not HTML: chevron would escape quotes and angle brackets in the span's values
# (autoevals switches this off too, but only once it is imported).
chevron.renderer._html_escape = lambda text: text


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    default_model: str
    # An organization's endpoint may only reach allowed addresses (egress.py); the operator's,
    # from the environment, may reach any.
    checked: bool = False


def endpoint_for(organization) -> Endpoint | None:
    """The organization's endpoint, else the one in the environment, else None."""
    from scoring.selectors import llm_endpoint_get  # imported here: selectors import the scorers

    configured = llm_endpoint_get(organization=organization) if organization else None
    if configured is not None:
        return Endpoint(
            configured.base_url, decrypt(configured.api_key_encrypted), configured.default_model, checked=True
        )
    base_url = os.environ.get("OPENAI_BASE_URL")
    if base_url:
        return Endpoint(base_url, os.environ.get("OPENAI_API_KEY", ""), settings.SCORING_LLM_DEFAULT_MODEL)
    return None


def endpoint_configured(organization) -> bool:
    """Whether LLM-backed scorers have an endpoint (without decrypting its key)."""
    from scoring.selectors import llm_endpoint_get

    return bool(os.environ.get("OPENAI_BASE_URL")) or llm_endpoint_get(organization=organization) is not None


def require_endpoint(organization) -> Endpoint:
    endpoint = endpoint_for(organization)
    if endpoint is None:
        raise ScorerError(
            "This scorer needs an LLM, and no endpoint is configured: set the organization's LLM "
            "endpoint (PUT /v1/llm_endpoint) or OPENAI_BASE_URL and OPENAI_API_KEY."
        )
    return endpoint


# --- The key at rest ----------------------------------------------------------------------


def _fernet():
    from cryptography.fernet import Fernet

    digest = hashlib.sha256(f"onlinescore.llm-endpoint:{settings.SECRET_KEY}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(api_key: str) -> str:
    return _fernet().encrypt(api_key.encode()).decode() if api_key else ""


def decrypt(token: str) -> str:
    from cryptography.fernet import InvalidToken

    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ScorerError(
            "The LLM endpoint's API key cannot be decrypted: was SECRET_KEY changed? Set it again."
        ) from None


# --- Calling ------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _openai_client(endpoint: Endpoint):
    """One client per endpoint, so that connections are reused; one attempt per call."""
    import openai

    http_client = None
    if endpoint.checked:
        # Redirects are not followed: they could lead to another host (see CheckedTransport).
        http_client = openai.DefaultHttpxClient(transport=egress.CheckedTransport(), follow_redirects=False)
    return openai.OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key or "none",
        timeout=settings.SCORING_LLM_TIMEOUT,
        max_retries=0,
        http_client=http_client,
    )


def client(endpoint: Endpoint):
    """An autoevals client for the endpoint: one attempt per call, no library retries."""
    from autoevals.oai import LLMClient

    wrapped = LLMClient(openai=_openai_client(endpoint))
    # autoevals retries openai.RateLimitError up to 100 times, sleeping up to minutes: our
    # retry policy decides instead (translate_errors makes a 429 transient).
    wrapped.RateLimitError = type("NeverRaised", (Exception,), {})
    return wrapped


def translate_errors(call):
    """Run `call`, turning the OpenAI client's failures into scorer errors users can read."""
    import openai

    try:
        return call()
    except openai.APITimeoutError:
        raise TransientScorerError(
            f"The LLM endpoint did not answer within {settings.SCORING_LLM_TIMEOUT:g} s."
        ) from None
    except openai.APIConnectionError as exc:
        if isinstance(exc.__cause__, egress.BlockedAddress):
            raise ScorerError(str(exc.__cause__)) from None
        raise TransientScorerError(f"The LLM endpoint cannot be reached: {exc}") from None
    except openai.APIStatusError as exc:
        message = f"The LLM endpoint answered {exc.status_code}: {_short(exc.message)}"
        if exc.status_code == 429 or exc.status_code >= 500:
            raise TransientScorerError(message) from None
        raise ScorerError(message) from None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Their `model` is an embedding model: autoevals' default, not the endpoint's chat model.
_EMBEDDING_SCORERS = ("EmbeddingSimilarity", "AnswerSimilarity")

# Extra inputs some autoevals scorers take, read from the span's metadata when present.
_EXTRA_INPUTS = ("context", "criteria", "instructions", "language")


def autoevals_scorer(cls, endpoint: Endpoint):
    """A function scoring with autoevals' LLM-backed `cls` through the endpoint."""
    options = {"client": client(endpoint)}
    # The endpoint's chat model, for the scorers that chat (not Moderation, which takes no
    # model, nor EmbeddingSimilarity, which needs an embedding model: autoevals' default).
    if "model" in inspect.signature(cls).parameters and cls.__name__ not in _EMBEDDING_SCORERS:
        options["model"] = endpoint.default_model
    instance = cls(**options)

    def score(*, input, output, expected, metadata):
        extra = {k: metadata[k] for k in _EXTRA_INPUTS if isinstance(metadata, dict) and k in metadata}
        score = translate_errors(
            lambda: instance.eval(output=output, expected=expected, input=input, **extra)
        )
        score.name = cls.__name__  # AnswerSimilarity's Score says "EmbeddingSimilarity"
        return score

    return score


# --- LLM-as-a-judge prompts ---------------------------------------------------------------


def judge(prompt_data: dict, endpoint: Endpoint):
    """A function scoring with an LLM-as-a-judge prompt: the chat messages rendered with
    {{input}}, {{output}}, {{expected}} and {{metadata}}, a forced `select_choice` tool call, and
    the choice mapped by `choice_scores`. Its metadata holds the choice and the rationale; its
    metrics, the tokens used and the estimated cost."""
    prompt = prompt_data["prompt"]
    options = prompt_data.get("options") or {}
    parser = prompt_data["parser"]
    choice_scores = parser["choice_scores"]
    # The order the judge offers the choices in: PostgreSQL's jsonb does not keep key order.
    choices = parser.get("choice_order") or list(choice_scores)
    use_cot = parser.get("use_cot", True)
    model = options.get("model") or endpoint.default_model
    params = {k: v for k, v in (options.get("params") or {}).items() if k in _PASSED_PARAMS}
    raw = _openai_client(endpoint)

    def score(*, input, output, expected, metadata):
        variables = {name: _template_value(value) for name, value in
                     (("input", input), ("output", output), ("expected", expected), ("metadata", metadata))}  # fmt: skip
        messages = [
            {**m, "content": chevron.render(m.get("content") or "", variables)} for m in prompt["messages"]
        ]
        response = translate_errors(
            lambda: raw.chat.completions.create(
                model=model, messages=messages, tools=[_select_choice_tool(choices, use_cot)],
                tool_choice={"type": "function", "function": {"name": "select_choice"}}, **params,
            )
        )  # fmt: skip
        choice, rationale = _parse_choice(response)
        if choice not in choice_scores:
            raise ScorerError(f"The judge chose {choice!r}, which is not one of {sorted(choice_scores)}.")
        return Judgement(
            score=choice_scores[choice],
            metadata={"choice": choice, "rationale": rationale},
            metrics=_usage_metrics(model, getattr(response, "usage", None)),
        )

    return score


@dataclass(frozen=True)
class Judgement:
    """A judge's score, with the metrics of the call that made it (for the scoring span)."""

    score: float
    metadata: dict
    metrics: dict
    name: str | None = None


_PASSED_PARAMS = ("temperature", "max_tokens", "top_p", "seed")


def _template_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _select_choice_tool(choices: list[str], use_cot: bool) -> dict:
    properties = {"choice": {"type": "string", "description": "The choice", "enum": choices}}
    required = ["choice"]
    if use_cot:
        properties = {
            "reasons": {"type": "string", "description": "Your reasoning, step by step, before choosing."},
            **properties,
        }
        required = ["reasons", "choice"]
    return {
        "type": "function",
        "function": {
            "name": "select_choice",
            "description": "Call this function to select a choice.",
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _parse_choice(response) -> tuple[str, str | None]:
    try:
        call = response.choices[0].message.tool_calls[0]
        arguments = json.loads(call.function.arguments)
        return arguments["choice"], arguments.get("reasons")
    except (AttributeError, IndexError, TypeError, KeyError, json.JSONDecodeError):
        raise ScorerError("The judge's answer has no select_choice call with a choice.") from None


def _usage_metrics(model: str, usage) -> dict:
    if usage is None:
        return {}
    # As the endpoint reports them; a count that is not a whole number counts as 0, rather than
    # fail the score it came with.
    prompt_tokens, completion_tokens = (
        value if isinstance(value := getattr(usage, name, None), int) and not isinstance(value, bool) else 0
        for name in ("prompt_tokens", "completion_tokens")
    )
    metrics = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    prices = settings.SCORING_LLM_PRICES.get(model)
    if prices:
        metrics["estimated_cost"] = (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1_000_000
    return metrics
