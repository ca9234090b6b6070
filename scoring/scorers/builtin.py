"""The autoevals scorers, by the name a rule uses: `{"type": "global", "name": ...}`.

Local ones run in the worker (pure computations on the span's values). LLM-backed ones call the
organization's OpenAI-compatible endpoint (llm.py). `CATALOGUE` is what GET /v1/scorers lists.
"""

from dataclasses import dataclass
from functools import lru_cache

import autoevals

from scoring.scorers import Scorer, ScorerError


class _NoCache(dict):
    def __setitem__(self, key, value):
        pass


# autoevals keeps every embedding it computes in a class-level dict, forever, keyed by the
# client's id (which another endpoint's client can reuse): a worker must not.
autoevals.EmbeddingSimilarity._CACHE = _NoCache()


# The worker stops a local scorer after SCORING_SCORER_TIMEOUT seconds of CPU, but only between
# Python bytecodes: the C code of polyleven (Levenshtein's edit distance, n x m / 64 steps) and of
# scipy (ListContains' assignment, cubic) cannot be interrupted. Their inputs are bounded first;
# a span beyond the bound gets an error on its scoring span instead of stalling a worker.
LEVENSHTEIN_MAX_PAIRS = 2_000_000_000  # output length x expected length: about 0.5 s
LIST_MAX_PAIRS = 250_000  # ListContains: output items x expected items


def _bounded(pairs: int, limit: int, what: str) -> None:
    if pairs > limit:
        raise ScorerError(
            f"{what}: {pairs:,} pairs to compare, more than the {limit:,} a local scorer takes."
        )


class Levenshtein(autoevals.Levenshtein):
    def _run_eval_sync(self, output, expected=None, **kwargs):
        if expected is not None:
            _bounded(len(str(output)) * len(str(expected)), LEVENSHTEIN_MAX_PAIRS,
                     "Levenshtein compares every character of the output with every character of the expected value")  # fmt: skip
        return super()._run_eval_sync(output, expected, **kwargs)


class ListContains(autoevals.ListContains):
    def _run_eval_sync(self, output, expected=None, **kwargs):
        if isinstance(output, list) and isinstance(expected, list):
            _bounded(len(output) * len(expected), LIST_MAX_PAIRS,
                     "ListContains compares every item of the output with every expected item")  # fmt: skip
        return super()._run_eval_sync(output, expected, **kwargs)


def _compare(instance) -> Scorer:
    """A scorer of output against expected (the question, `input`, goes along as context)."""

    def score(*, input, output, expected, metadata):
        return instance.eval(output=output, expected=expected, input=input)

    return Scorer(name=instance._name(), fn=score, requires=("output", "expected"))


def _valid_json(*, input, output, expected, metadata):
    # Only the output: ValidJSON would take `expected` for a JSON schema.
    return autoevals.ValidJSON().eval(output=output)


REGISTRY: dict[str, Scorer] = {
    scorer.name: scorer
    for scorer in (
        _compare(autoevals.ExactMatch()),
        _compare(Levenshtein()),
        _compare(autoevals.NumericDiff()),
        _compare(autoevals.JSONDiff(string_scorer=Levenshtein())),
        _compare(ListContains(pairwise_scorer=Levenshtein())),
        Scorer(name="ValidJSON", fn=_valid_json, requires=("output",)),
    )
}


@dataclass(frozen=True)
class LLMScorer:
    name: str
    requires: tuple[str, ...]
    optional: tuple[str, ...] = ()  # read from the span's metadata


_RAG = ("input", "output", "expected")
LLM_SCORERS: dict[str, LLMScorer] = {
    s.name: s
    for s in (
        LLMScorer("Factuality", ("input", "output", "expected")),
        LLMScorer("ClosedQA", ("input", "output"), ("metadata.criteria",)),
        LLMScorer("Battle", ("input", "output", "expected"), ("metadata.instructions",)),
        LLMScorer("Humor", ("output",)),
        LLMScorer("Possible", ("input", "output")),
        LLMScorer("Security", ("output",), ("metadata.instructions",)),
        LLMScorer("Sql", ("input", "output", "expected")),
        LLMScorer("Summary", ("input", "output", "expected")),
        LLMScorer("Translation", ("input", "output", "expected"), ("metadata.language",)),
        LLMScorer("EmbeddingSimilarity", ("output", "expected")),
        LLMScorer("Moderation", ("output",)),
        *(
            LLMScorer(name, _RAG, ("metadata.context",))
            for name in (
                "ContextEntityRecall",
                "ContextRelevancy",
                "ContextRecall",
                "ContextPrecision",
                "Faithfulness",
                "AnswerRelevancy",
                "AnswerSimilarity",
                "AnswerCorrectness",
            )
        ),  # fmt: skip
    )
}


def resolve(name: str, organization) -> Scorer:
    if name in REGISTRY:
        return REGISTRY[name]
    if name in LLM_SCORERS:
        from scoring.scorers import llm

        try:
            endpoint = llm.require_endpoint(organization)
        except ScorerError as exc:
            raise ScorerError(f"{name}: {exc}") from None
        return _llm_scorer(name, endpoint)
    raise ScorerError(f"Unknown scorer {name!r}; GET /v1/scorers lists them.")


@lru_cache(maxsize=256)
def _llm_scorer(name: str, endpoint) -> Scorer:
    """One per scorer and endpoint: the client keeps its connections between calls."""
    from scoring.scorers import llm

    spec = LLM_SCORERS[name]
    return Scorer(name=name, fn=llm.autoevals_scorer(getattr(autoevals, name), endpoint), requires=spec.requires,
                  needs_llm=True, blocking=True)  # fmt: skip


def catalogue() -> list[dict]:
    local = [
        {"name": s.name, "needs_llm": False, "requires": list(s.requires), "optional": []}
        for s in REGISTRY.values()
    ]
    remote = [{"name": s.name, "needs_llm": True, "requires": list(s.requires), "optional": list(s.optional)}
              for s in LLM_SCORERS.values()]  # fmt: skip
    return sorted(local + remote, key=lambda s: (s["needs_llm"], s["name"]))
