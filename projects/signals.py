"""Domain events of the span store. The scoring engine subscribes to them; `projects` never
imports `scoring`."""

from django.dispatch import Signal

# Sent once per ingest write that ended spans, inside its database transaction, after the rows
# are saved. Argument `ended`: list[projects.ingest.services.EndedSpan]. A span appears in exactly
# one such event in its life: the write that makes `metrics.end` present for the first time (a
# row deleted with `_object_delete` and written again is a new span).
# A receiver that raises rolls the whole write back (the client sees an error and may retry), so
# receivers must only record work, such as rows for a job to pick up after commit.
spans_ended = Signal()

# Sent once per ingest write that will end spans, before its transaction (so, unless its caller
# holds one, before the write lock), with the EndedSpan objects that `spans_ended` will get if
# the rows are still as the write read them (else it is planned again under the lock, and
# `spans_ended` gets new objects). Argument `ending`: list[EndedSpan], whose spans are not
# saved yet. Receivers may work out there what they will write in `spans_ended` (keeping it in
# `EndedSpan.prepared`), so as to hold the lock less: on SQLite one lock serializes every
# writer. A receiver that raises fails the write, before anything is written.
spans_ending = Signal()
