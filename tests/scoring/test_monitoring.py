"""The Monitor page's charts: score averages per hour or day, and their SVG."""

import itertools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory

from projects.models import Span
from scoring.models import Rule, ScoringRun
from scoring.monitoring import Point, RunCounts, chart_svg, run_counts, score_series
from scoring.scorers import reference_key
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
EXACT = {"type": "global", "name": "ExactMatch"}
LEVENSHTEIN = {"type": "global", "name": "Levenshtein"}
JUDGE = {"type": "function", "id": "judge"}
T0 = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
_row_ids = itertools.count()


def at(hours: float = 0, days: int = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def rule(project, name="rule") -> Rule:
    return Rule.objects.create(project=project, name=name, scorers=[EXACT])


def run(project, finished, scores, *, rule=None, scorer=EXACT, status=ScoringRun.Status.DONE) -> ScoringRun:
    span = Span.objects.create(
        project=project,
        row_id=f"row-{next(_row_ids)}",
        span_id="s",
        root_span_id="r",
        created=finished,
        xact_id=1,
        ended_at=finished,
    )
    return ScoringRun.objects.create(
        project=project,
        span=span,
        rule=rule,
        scorer=scorer,
        scorer_key=reference_key(scorer),
        status=status,
        scores=scores,
        error="boom" if status == ScoringRun.Status.ERROR else "",
        created=finished - timedelta(seconds=5),
        updated=finished,
        finished=finished,
    )


def summary(series: dict[str, list[Point]]) -> dict[str, list[tuple]]:
    return {
        name: [(p.start, pytest.approx(p.average), p.count) for p in points]
        for name, points in series.items()
    }


# --- score_series ----------------------------------------------------------------------------


def test_hourly_averages_and_counts_per_score_name(project):
    run(project, at(hours=1) + timedelta(minutes=5), {"ExactMatch": 1.0})
    run(project, at(hours=1) + timedelta(minutes=50), {"ExactMatch": 0.0})
    run(project, at(hours=1) + timedelta(minutes=59, seconds=59), {"ExactMatch": 0.5})
    run(project, at(hours=3) + timedelta(minutes=1), {"ExactMatch": 0.25})
    run(project, at(hours=3) + timedelta(minutes=2), {"Levenshtein": 0.8}, scorer=LEVENSHTEIN)
    run(project, at(hours=3) + timedelta(minutes=30), {"Levenshtein": 0.4}, scorer=LEVENSHTEIN)

    series = score_series(project=project, bucket="hour", since=at(0), until=at(24))

    assert summary(series) == {
        "ExactMatch": [(at(1), 0.5, 3), (at(3), 0.25, 1)],
        "Levenshtein": [(at(3), 0.6, 2)],
    }
    assert all(p.start.utcoffset() == timedelta(0) for points in series.values() for p in points)


def test_daily_buckets_average_the_whole_day(project):
    run(project, at(days=0, hours=0.1), {"ExactMatch": 1.0})
    run(project, at(days=0, hours=23.9), {"ExactMatch": 0.0})
    run(project, at(days=2, hours=12), {"ExactMatch": 0.75})

    series = score_series(project=project, bucket="day", since=at(days=-30), until=at(days=3))

    assert summary(series) == {"ExactMatch": [(at(days=0), 0.5, 2), (at(days=2), 0.75, 1)]}


def test_a_run_with_several_scores_counts_in_each_of_its_names(project):
    for values in ({"relevance": 1.0, "tone": 0.5}, {"relevance": 0.5, "tone": 0.0}):
        run(project, at(hours=2), values, scorer=JUDGE)
    run(project, at(hours=2), {"ExactMatch": 1.0})

    series = score_series(project=project, bucket="hour", since=at(0), until=at(24))

    assert summary(series) == {
        "ExactMatch": [(at(2), 1.0, 1)],
        "relevance": [(at(2), 0.75, 2)],
        "tone": [(at(2), 0.25, 2)],
    }


def test_error_runs_unfinished_runs_and_null_values_are_not_averaged(project):
    run(project, at(hours=1), {"ExactMatch": 0.2})
    run(project, at(hours=1), {"ExactMatch": None})
    run(project, at(hours=1), {"ExactMatch": 0.9, "tone": None}, scorer=JUDGE)
    run(project, at(hours=1), None, status=ScoringRun.Status.ERROR)
    run(project, at(hours=1), {"ExactMatch": 1.0}, status=ScoringRun.Status.RUNNING)
    # Only null values in a bucket: no point there; only nulls in the window: no series.
    run(project, at(hours=2), {"ExactMatch": None})

    series = score_series(project=project, bucket="hour", since=at(0), until=at(24))

    assert summary(series) == {"ExactMatch": [(at(1), 0.55, 2)]}


def test_runs_outside_the_window_another_project_and_another_rule_are_left_out(project):
    first, second = rule(project, "first"), rule(project, "second")
    run(project, at(hours=1), {"ExactMatch": 1.0}, rule=first)
    run(project, at(hours=1), {"ExactMatch": 0.0}, rule=second)
    run(project, at(hours=1), {"ExactMatch": 0.5})  # manual: no rule
    run(project, at(hours=-0.01), {"ExactMatch": 0.0}, rule=first)  # before `since`
    run(project, at(hours=24), {"ExactMatch": 0.0}, rule=first)  # `until` is excluded
    elsewhere = ProjectFactory(organization=project.organization)
    run(elsewhere, at(hours=1), {"ExactMatch": 0.0, "Other": 0.0})

    window = {"bucket": "hour", "since": at(0), "until": at(24)}
    assert summary(score_series(project=project, rule=first, **window)) == {"ExactMatch": [(at(1), 1.0, 1)]}
    assert summary(score_series(project=project, rule=second, **window)) == {"ExactMatch": [(at(1), 0.0, 1)]}
    # The project's chart: every rule's runs and the manual ones.
    assert summary(score_series(project=project, **window)) == {"ExactMatch": [(at(1), 0.5, 3)]}


def test_run_counts_give_the_finished_runs_and_errors_per_rule_manual_and_all(project):
    first, second = rule(project, "first"), rule(project, "second")
    run(project, at(hours=1), {"ExactMatch": 1.0}, rule=first)
    run(project, at(hours=2), None, rule=first, status=ScoringRun.Status.ERROR)
    run(project, at(hours=3), None, rule=second, status=ScoringRun.Status.ERROR)
    run(project, at(hours=3), {"ExactMatch": 0.5})  # manual
    run(project, at(hours=3), None, rule=first, status=ScoringRun.Status.RUNNING)  # not finished
    run(project, at(hours=25), None, rule=first, status=ScoringRun.Status.ERROR)  # after `until`
    run(ProjectFactory(organization=project.organization), at(hours=1), None, status=ScoringRun.Status.ERROR)

    counts = run_counts(project=project, since=at(0), until=at(24))

    assert counts == {
        first.pk: RunCounts(finished=2, errors=1),
        second.pk: RunCounts(finished=1, errors=1),
        None: RunCounts(finished=1, errors=0),
        "all": RunCounts(finished=4, errors=2),
    }


def test_no_runs_give_no_series(project):
    run(project, at(days=-3), {"ExactMatch": 1.0})
    assert score_series(project=project, bucket="day", since=at(days=-1), until=at(days=1)) == {}


def test_score_names_that_sql_paths_could_misread_are_averaged(project):
    names = ["<script>alert(1)</script>", "it's", 'say "hi"', "a.b", "x__y", "100%", "é ü", "$[0]"]
    run(project, at(hours=1), {name: 0.5 for name in names}, scorer=JUDGE)
    run(project, at(hours=1), {name: 1.0 for name in names}, scorer=JUDGE)

    series = score_series(project=project, bucket="hour", since=at(0), until=at(24))

    assert summary(series) == {name: [(at(1), 0.75, 2)] for name in sorted(names)}


def test_daily_buckets_follow_the_configured_time_zone(project, settings):
    settings.TIME_ZONE = "Asia/Kolkata"  # UTC+05:30: its days start at 18:30 UTC
    run(project, datetime(2026, 11, 25, 18, 29, tzinfo=UTC), {"ExactMatch": 0.0, 'say "hi"': 0.0})
    run(project, datetime(2026, 11, 25, 18, 30, tzinfo=UTC), {"ExactMatch": 1.0, 'say "hi"': 1.0})
    run(project, datetime(2026, 11, 26, 18, 29, tzinfo=UTC), {"ExactMatch": 0.5, 'say "hi"': 0.5})

    series = score_series(project=project, bucket="day", since=at(days=-30), until=at(days=2))

    day_start = datetime(2026, 11, 25, 18, 30, tzinfo=UTC)
    expected = [(day_start - timedelta(days=1), 0.0, 1), (day_start, 0.75, 2)]
    # A name with a double quote, which SQLite's JSON paths cannot address, is averaged alike.
    assert summary(series) == {"ExactMatch": expected, 'say "hi"': expected}
    assert [p.start.utcoffset() for p in series["ExactMatch"]] == [timedelta(hours=5, minutes=30)] * 2


def test_the_series_take_a_bounded_number_of_queries(project, django_assert_max_num_queries):
    for hour in range(24):
        run(project, at(hours=hour), {"ExactMatch": 1.0})
        run(project, at(hours=hour), {"a": 1.0, "b": 0.0, "c": 0.5}, scorer=JUDGE)
    with django_assert_max_num_queries(3):
        series = score_series(project=project, bucket="hour", since=at(0), until=at(24))
    assert {name: len(points) for name, points in series.items()} == {
        "ExactMatch": 24,
        "a": 24,
        "b": 24,
        "c": 24,
    }


# --- chart_svg -------------------------------------------------------------------------------


def parse(svg) -> ET.Element:
    return ET.fromstring(str(svg))


def polylines(root: ET.Element) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, pair.split(","))) for pair in line.get("points").split()]
        for line in root.iter(f"{SVG}polyline")
    ]


def texts(root: ET.Element) -> list[str]:
    return [element.text for element in root.iter(f"{SVG}text")]


def points(*averages, hours=0, count=1) -> list[Point]:
    return [Point(at(hours + i), average, count) for i, average in enumerate(averages)]


def test_the_chart_draws_one_line_with_a_dot_per_point_for_each_score():
    series = {"ExactMatch": points(0.5, 1.0, 0.0), "Levenshtein": points(0.25, hours=5)}

    root = parse(chart_svg(series=series, bucket="hour", since=at(0), until=at(24), title="demo"))

    assert root.tag == f"{SVG}svg" and root.get("viewBox").startswith("0 0 960 ")
    lines = polylines(root)
    assert [len(line) for line in lines] == [3, 1]
    assert len({line.get("stroke") for line in root.iter(f"{SVG}polyline")}) == 2
    exact = lines[0]
    # Left to right in time; 100 % is drawn above 0 %.
    assert exact[0][0] < exact[1][0] < exact[2][0] < lines[1][0][0]
    assert exact[1][1] < exact[0][1] < exact[2][1]
    dots = [circle.find(f"{SVG}title").text for circle in root.iter(f"{SVG}circle")]
    assert dots[:2] == [
        "ExactMatch · 2026-11-26 00:00 · 50.0 % (n=1)",
        "ExactMatch · 2026-11-26 01:00 · 100.0 % (n=1)",
    ]
    assert len(dots) == 4
    assert root.find(f"{SVG}title").text == "demo"


def test_the_legend_gives_each_score_its_latest_average():
    series = {"ExactMatch": points(0.5, 0.734), "tone": points(1.0)}

    root = parse(chart_svg(series=series, bucket="hour", since=at(0), until=at(24), title="demo"))

    legend = [g.find(f"{SVG}text").text for g in root.iter(f"{SVG}g") if g.get("class") == "legend"]
    assert legend == ["ExactMatch 73.4 %", "tone 100.0 %"]


def test_the_axes_have_percent_gridlines_and_time_labels():
    hourly = parse(chart_svg(series={"s": points(0.5)}, bucket="hour", since=at(0), until=at(24), title="t"))
    labels = texts(hourly)
    assert labels[:5] == ["0 %", "25 %", "50 %", "75 %", "100 %"]
    assert len([line for line in hourly.iter(f"{SVG}line") if line.get("class") == "grid"]) == 5
    assert {"00:00", "12:00", "21:00"} <= set(labels) and "01:00" not in labels

    daily = parse(
        chart_svg(series={"s": points(0.5)}, bucket="day", since=at(days=-30), until=at(days=1), title="t")
    )
    day_labels = [t for t in texts(daily) if len(t) == 5 and t[2] == "-"]
    # Every 4th day, back from the last.
    assert day_labels == ["10-30", "11-03", "11-07", "11-11", "11-15", "11-19", "11-23", "11-27"]


def test_user_text_is_escaped():
    name = "<script>alert('x')</script> & co"
    svg = str(
        chart_svg(series={name: points(0.5)}, bucket="hour", since=at(0), until=at(24), title="<b>t</b>")
    )

    assert "<script>" not in svg and "<b>" not in svg
    root = ET.fromstring(svg)
    assert root.find(f"{SVG}title").text == "<b>t</b>"
    assert name + " 50.0 %" in texts(root)
    assert next(root.iter(f"{SVG}circle")).find(f"{SVG}title").text.startswith(name + " · ")


def test_an_empty_chart_says_so():
    for series in ({}, {"ExactMatch": []}):
        root = parse(chart_svg(series=series, bucket="day", since=at(days=-30), until=at(0), title="t"))
        assert "No scores in this period" in texts(root)
        assert polylines(root) == [] and list(root.iter(f"{SVG}circle")) == []


def test_the_chart_draws_what_score_series_reads(project):
    run(project, at(hours=1), {"ExactMatch": 1.0})
    run(project, at(hours=2), {"ExactMatch": 0.5, "tone": 0.5}, scorer=JUDGE)
    window = {"bucket": "hour", "since": at(0), "until": at(24)}

    root = parse(chart_svg(series=score_series(project=project, **window), title="demo", **window))

    assert [len(line) for line in polylines(root)] == [2, 1]


def test_the_monitor_page_renders_each_chart_in_a_card(project):
    request = RequestFactory().get("/")
    request.user = UserFactory()
    svg = chart_svg(series={"ExactMatch": points(0.5)}, bucket="day", since=at(-30), until=at(0), title="x")
    charts = [
        {"title": "All scores", "svg": svg, "rule": None, "runs": RunCounts(3, 0)},
        {"title": "<i>mine</i>", "svg": svg, "rule": rule(project), "runs": RunCounts(2, 2)},
    ]

    html = render_to_string(
        "scoring/monitor.html", {"project": project, "bucket": "day", "charts": charts}, request=request
    )

    assert "<h1>Monitor</h1>" in html
    assert html.count('<section class="card">') == 2 and html.count("<svg ") == 2
    assert "&lt;i&gt;mine&lt;/i&gt;" in html
    assert "3 runs finished in this period." in html
    assert '2 runs finished in this period, <span class="error">2 with errors</span>' in html
    assert '<option value="day" selected>' in html and '<option value="hour">' in html
