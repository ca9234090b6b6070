"""The Monitor page: each score's average over time, per project or per rule, as inline SVG.

Averages are computed in the database (one grouped query per chart) and drawn on the server,
so that the page needs no chart library and works offline.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Avg, Count, FloatField, Max, Min, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, NullIf, Trunc
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from projects.models import Project
from scoring.models import Rule, ScoringRun


@dataclass(frozen=True)
class Bucket:
    kind: str  # Trunc's kind
    step: timedelta
    window: timedelta  # how far back the Monitor page looks with this bucket
    label: str
    tick_format: str  # x axis labels
    start_format: str  # a bucket's start in hover text


BUCKETS = {
    "hour": Bucket(
        "hour", timedelta(hours=1), timedelta(hours=24), "Last 24 hours (hourly)", "%H:%M", "%Y-%m-%d %H:%M"
    ),
    "day": Bucket("day", timedelta(days=1), timedelta(days=30), "Last 30 days (daily)", "%m-%d", "%Y-%m-%d"),
}


@dataclass(frozen=True)
class Point:
    start: datetime  # the bucket's start, aware, in the project's time zone (settings.TIME_ZONE)
    average: float  # in [0, 1]
    count: int  # runs averaged


def score_series(
    *, project: Project, rule: Rule | None = None, bucket: str, since: datetime, until: datetime
) -> dict[str, list[Point]]:
    """Each score name -> its average per bucket, in time order, over the runs of the project
    (or of one rule) that finished in [since, until) with status done and a numeric value.
    Buckets without a value are left out, and so are names without any; names are sorted.
    Buckets are those of the current time zone (settings.TIME_ZONE).

    Three queries whatever the window: the score names (see `_score_names`), then one grouped
    query that averages every name at once (and, on SQLite only, one more if a name holds a
    double quote: see `_addressable`)."""
    spec = BUCKETS[bucket]
    runs = _finished(project, since, until).filter(status=ScoringRun.Status.DONE)
    if rule is not None:
        runs = runs.filter(rule=rule)
    scorers_of = _score_names(runs)
    if not scorers_of:
        return {}
    names = sorted(name for name in scorers_of if _addressable(name))
    series: dict[str, list[Point]] = {name: [] for name in sorted(scorers_of)}
    if names:
        aggregates = {}
        for i, name in enumerate(names):
            # SQL NULL for a missing key or a null, which Avg and Count skip. On SQLite, Django's
            # key text of a JSON null is the text 'null', which CAST would read as 0.
            text = NullIf(KeyTextTransform(name, "scores"), Value("null"), output_field=TextField())
            value = Cast(text, FloatField())
            aggregates[f"avg_{i}"] = Avg(value)
            aggregates[f"n_{i}"] = Count(value)
        rows = (
            runs.annotate(bucket_start=Trunc("finished", spec.kind, tzinfo=timezone.get_current_timezone()))
            .values("bucket_start")
            .annotate(**aggregates)
            .order_by("bucket_start")
        )
        for row in rows:
            for i, name in enumerate(names):
                if row[f"n_{i}"]:
                    series[name].append(Point(row["bucket_start"], float(row[f"avg_{i}"]), row[f"n_{i}"]))
    others = {name: scorer_keys for name, scorer_keys in scorers_of.items() if not _addressable(name)}
    if others:
        series.update(_series_in_python(runs, others, spec))
    return {name: points for name, points in series.items() if points}


def _finished(project: Project, since: datetime, until: datetime):
    """The project's runs that finished (done or error) in [since, until)."""
    return ScoringRun.objects.filter(
        project=project,
        status__in=(ScoringRun.Status.DONE, ScoringRun.Status.ERROR),
        finished__gte=since,
        finished__lt=until,
        # Implied (a run's `updated` is set with `finished` and never goes back), and it lets the
        # (status, updated) index find the window's runs: there is no index on `finished`.
        updated__gte=since,
    )


@dataclass(frozen=True)
class RunCounts:
    finished: int = 0
    errors: int = 0


def run_counts(*, project: Project, since: datetime, until: datetime) -> dict:
    """Runs finished in [since, until), in all and with an error, by rule id (None: manual runs)
    and for the whole project under the key "all": a rule whose scorers fail has no score to
    chart, and says so with these. One grouped query."""
    runs = _finished(project, since, until)
    counts, total = {}, RunCounts()
    for rule_id, status, n in runs.values_list("rule_id", "status").annotate(n=Count("pk")).order_by():
        errors = n if status == ScoringRun.Status.ERROR else 0
        before = counts.get(rule_id, RunCounts())
        counts[rule_id] = RunCounts(before.finished + n, before.errors + errors)
        total = RunCounts(total.finished + n, total.errors + errors)
    counts["all"] = total
    return counts


def _score_names(runs) -> dict[str, set[str]]:
    """The score names of the runs, each with the scorers (`scorer_key`) that gave it, found
    cheaply: a run's scores are keyed by its scorer's score names, so the first and the last
    run of each scorer in the window stand for all of its runs. A scorer whose names change
    from run to run between those two is not followed."""
    samples = runs.exclude(scores=None).values("scorer_key").annotate(first=Min("pk"), last=Max("pk"))
    ids = {pk for sample in samples for pk in (sample["first"], sample["last"])}
    scorers_of: dict[str, set[str]] = {}
    for scorer_key, scores in ScoringRun.objects.filter(pk__in=ids).values_list("scorer_key", "scores"):
        for name in scores if isinstance(scores, dict) else ():
            scorers_of.setdefault(name, set()).add(scorer_key)
    return scorers_of


def _addressable(name: str) -> bool:
    """Whether the database can read the key `name` of a JSON object: SQLite's JSON paths have
    no escape for a double quote within a key, so there such a key reads as missing."""
    return '"' not in name or connection.vendor != "sqlite"


def _series_in_python(runs, scorers_of: dict[str, set[str]], spec: Bucket) -> dict[str, list[Point]]:
    """The series of names the database cannot address, averaged here over the runs of the
    scorers that give them: one query, streamed."""
    tz = timezone.get_current_timezone()
    sums: dict[str, dict[datetime, list]] = {name: {} for name in scorers_of}
    scorer_keys = set().union(*scorers_of.values())
    for finished, scores in (
        runs.filter(scorer_key__in=scorer_keys).values_list("finished", "scores").iterator()
    ):
        for name in scorers_of:
            value = scores.get(name) if isinstance(scores, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total = sums[name].setdefault(_floor(finished, spec, tz), [0.0, 0])
                total[0] += value
                total[1] += 1
    return {
        name: [Point(start, total / count, count) for start, (total, count) in sorted(buckets.items())]
        for name, buckets in sums.items()
    }


# --- Drawing ---------------------------------------------------------------------------------

WIDTH = 960
PLOT_HEIGHT = 180
LEFT, RIGHT = 56, WIDTH - 28  # plot area; the margins hold the y labels and the last x label
LEGEND_ROW = 18
BOTTOM_MARGIN = 28  # x labels
# Distinct on white and for the common colour blindnesses (Okabe-Ito, then Tableau).
PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#d55e00",
    "#56b4e9",
    "#7f7f7f",
    "#b8860b",
    "#6a3d9a",
    "#17becf",
)
LEGEND_NAME_MAX = 40
CHAR_WIDTH = 6.5  # of the 12px system font, averaged: enough to lay out the legend

STYLE = (
    ".score-chart text{font:12px system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;fill:#64748b}"
    ".score-chart .grid{stroke:#e2e8f0;stroke-width:1}"
    ".score-chart .axis{stroke:#94a3b8;stroke-width:1}"
    ".score-chart .series{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}"
    ".score-chart .legend text{fill:#334155}"
    ".score-chart .empty{font-size:14px}"
)


def chart_svg(
    *, series: dict[str, list[Point]], bucket: str, since: datetime, until: datetime, title: str
) -> SafeString:
    """An inline SVG line chart of `series` (as `score_series` returns it) over [since, until):
    y from 0 to 100 %, x from the bucket holding `since` to the one holding `until`, each point
    at its bucket's start. One polyline and its dots per score, coloured from a fixed palette in
    the order of the series; a legend with each score's latest average; hover text on each dot.
    Every text from users (the title, the score names) is escaped."""
    spec = BUCKETS[bucket]
    tz = timezone.get_current_timezone()
    x0 = _floor(since, spec, tz)
    x1 = max(_floor(until, spec, tz), x0 + spec.step)
    span = (x1 - x0).total_seconds()
    drawn = [(name, points) for name, points in series.items() if points]

    legend, rows = _legend(drawn)
    top = 12 + rows * LEGEND_ROW + (8 if rows else 0)
    bottom = top + PLOT_HEIGHT
    height = bottom + BOTTOM_MARGIN

    def x(moment: datetime) -> float:
        return LEFT + (RIGHT - LEFT) * (moment - x0).total_seconds() / span

    def y(value: float) -> float:
        return bottom - PLOT_HEIGHT * min(max(value, 0.0), 1.0)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="score-chart" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" preserveAspectRatio="xMidYMid meet" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style>",
    ]
    for percent in (0, 25, 50, 75, 100):
        level = round(y(percent / 100), 1)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{level}" x2="{RIGHT}" y2="{level}"/>')
        parts.append(f'<text x="{LEFT - 8}" y="{level + 4}" text-anchor="end">{percent} %</text>')
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{RIGHT}" y2="{bottom}"/>')
    for moment in _ticks(x0, x1, spec, tz):
        at = round(x(moment), 1)
        parts.append(f'<line class="axis" x1="{at}" y1="{bottom}" x2="{at}" y2="{bottom + 4}"/>')
        label = moment.astimezone(tz).strftime(spec.tick_format)
        parts.append(f'<text x="{at}" y="{bottom + 18}" text-anchor="middle">{label}</text>')

    if not drawn:
        middle = round((top + bottom) / 2, 1)
        parts.append(
            f'<text class="empty" x="{(LEFT + RIGHT) / 2}" y="{middle}" text-anchor="middle">'
            "No scores in this period</text>"
        )
    parts += legend
    for index, (name, points) in enumerate(drawn):
        colour = PALETTE[index % len(PALETTE)]
        coordinates = [(round(x(p.start), 1), round(y(p.average), 1)) for p in points]
        parts.append(f'<g class="score" data-score="{escape(name)}">')
        parts.append(
            f'<polyline class="series" stroke="{colour}" points="'
            + " ".join(f"{cx},{cy}" for cx, cy in coordinates)
            + '"/>'
        )
        for point, (cx, cy) in zip(points, coordinates):
            hover = (
                f"{name} · {point.start.astimezone(tz).strftime(spec.start_format)} · "
                f"{_percent(point.average)} (n={point.count})"
            )
            parts.append(
                f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"><title>{escape(hover)}</title></circle>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _legend(drawn: list[tuple[str, list[Point]]]) -> tuple[list[str], int]:
    """The legend's elements, laid out left to right in as many rows as it takes, and the count
    of rows."""
    parts, row, at = [], 0, LEFT
    for index, (name, points) in enumerate(drawn):
        shown = name if len(name) <= LEGEND_NAME_MAX else name[: LEGEND_NAME_MAX - 1] + "…"
        text = f"{shown} {_percent(points[-1].average)}"
        width = 16 + CHAR_WIDTH * len(text) + 20
        if at > LEFT and at + width > RIGHT:
            row, at = row + 1, LEFT
        baseline = 12 + row * LEGEND_ROW + 12
        colour = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<g class="legend"><title>{escape(name)}</title>'
            f'<rect x="{at}" y="{baseline - 9}" width="10" height="10" rx="2" fill="{colour}"/>'
            f'<text x="{at + 16}" y="{baseline}">{escape(text)}</text></g>'
        )
        at += width
    return parts, (row + 1 if drawn else 0)


def _percent(average: float) -> str:
    return f"{average * 100:.1f} %"


def _floor(moment: datetime, spec: Bucket, tz) -> datetime:
    """The start of the bucket holding `moment`, in `tz` (as the database truncates)."""
    local = moment.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    if spec.kind == "day":
        local = local.replace(hour=0)
    return local


def _ticks(x0: datetime, x1: datetime, spec: Bucket, tz) -> list[datetime]:
    """Bucket starts to label: about 8, at a round interval (every k hours from midnight, or
    every k days back from the last)."""
    count = round((x1 - x0) / spec.step)
    every = next((k for k in (1, 2, 3, 4, 6, 12, 24) if count / k <= 8), math.ceil(count / 8))
    starts = [x0 + i * spec.step for i in range(count + 1)]
    if spec.kind == "hour":
        return [s for s in starts if s.astimezone(tz).hour % every == 0]
    return [s for i, s in enumerate(starts) if (count - i) % every == 0]
