"""A Braintrust SDK client, run by tests/e2e/test_sdk.py as a subprocess with the interpreter of
one SDK version. Only the public SDK API is used, configured the way a user would:

    BRAINTRUST_APP_URL=<server> BRAINTRUST_API_KEY=<key> python sdk_client.py <project name>

BRAINTRUST_SYNC_FLUSH=1 makes a failed /logs3 request raise from `flush()` (instead of being
printed and dropped by the background thread), so any server error ends this script with a
non-zero exit code. The script logs in three flushes, each one /logs3 request:

1. `@traced` outer -> inner (complete rows); the "long-running" span, started and still open,
   with a child that ended.
2. A log on "long-running" after the flush (a merge of a span started in request 1), a child
   started after the flush, and the end of "long-running".
3. Feedback (scores, expected, comment) on the outer span.

It prints one line `E2E_RESULT <json>` with the SDK version and the ids of every span.
"""

import json
import sys

from braintrust import current_span, init_logger, traced
from braintrust.version import VERSION

ids: dict[str, dict] = {}


def record(name: str, span) -> None:
    ids[name] = {"id": span.id, "span_id": span.span_id, "root_span_id": span.root_span_id}


def main(project_name: str) -> None:
    logger = init_logger(project=project_name)

    @traced
    def inner(x):
        record("inner", current_span())
        current_span().log(metadata={"k": "v"}, metrics={"prompt_tokens": 3})
        return x * 2

    @traced(name="outer-handler", type="task")
    def outer(q):
        record("outer", current_span())
        current_span().log(tags=["prod"], scores={"manual": 0.5}, metadata={"user": "u1"})
        return {"answer": inner(len(q))}

    assert outer("hello") == {"answer": 10}

    long = logger.start_span(name="long-running", type="task")
    record("long", long)
    long.log(input={"q": 1}, metadata={"a": {"x": 1}}, tags=["t1"])
    child = long.start_span(name="child", type="llm")
    record("child", child)
    child.log(output="llm says hi", metrics={"tokens": 12})
    child.end()
    logger.flush()  # request 1: "long-running" is open

    long.log(metadata={"a": {"y": 2}}, output="answer", tags=["t2"], scores={"acc": 0.9})
    with long.start_span(name="late-child", type="tool") as late:
        record("late", late)
        late.log(input="lookup", output="found")
    long.end()
    logger.flush()  # request 2: merges into "long-running", which ends

    logger.log_feedback(id=ids["outer"]["id"], scores={"helpful": 1}, expected={"answer": 10}, comment="nice")
    logger.flush()  # request 3: a merge and a comment row

    print("E2E_RESULT " + json.dumps({"version": VERSION, "ids": ids}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
