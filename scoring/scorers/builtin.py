"""The autoevals scorers that run locally, by the name a rule uses: `{"type": "global", "name": ...}`."""

import autoevals

from scoring.scorers import Scorer


def _compare(cls) -> Scorer:
    """A scorer of output against expected (the question, `input`, goes along as context)."""
    instance = cls()

    def score(*, input, output, expected, metadata):
        return instance.eval(output=output, expected=expected, input=input)

    return Scorer(name=cls.__name__, fn=score, requires=("output", "expected"))


def _valid_json(*, input, output, expected, metadata):
    # Only the output: ValidJSON would take `expected` for a JSON schema.
    return autoevals.ValidJSON().eval(output=output)


REGISTRY: dict[str, Scorer] = {
    scorer.name: scorer
    for scorer in (
        _compare(autoevals.ExactMatch),
        _compare(autoevals.Levenshtein),
        _compare(autoevals.NumericDiff),
        _compare(autoevals.JSONDiff),
        Scorer(name="ValidJSON", fn=_valid_json, requires=("output",)),
    )
}
