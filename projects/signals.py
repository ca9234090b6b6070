"""Domain events of the span store. The scoring engine subscribes to them; `projects` never
imports `scoring`."""

from django.dispatch import Signal

# Sent once per ingest write that ended spans, inside its database transaction, after the rows
# are saved. Argument `ended`: list[projects.ingest.services.EndedSpan]. A span appears in exactly
# one such event in its life: the write that makes `metrics.end` present for the first time.
spans_ended = Signal()
