"""The model's monitoring page (ModelLayout.monitoring_page): what the served model did, day after day.

One monitor run judges one day; its gates say whether that day was fine, never whether things are getting
worse. This page lays the days side by side so a reader sees the slope: a table of the last 30 days
(versions and their traffic shares, online logloss against offline, calibration, AUC, answered share, largest
KL, largest unseen share, the alarms in red) and one picture per window (the last 30 and 90 days) whose panels
share the day axis: online vs offline logloss, calibration in its tolerance band, largest KL and unseen share
against their thresholds, answered share in its band, and the model runs' training rows with the trend
gate_volume fitted. Production changes are vertical lines labelled with the version they put in production,
so a change of the figures can be read against the deploy that caused it; days with an alarm are shaded.

keiko.step_runner redraws the page after every monitor step; `keiko monitor <model>` prints `summary_lines`,
the same days as text. Everything comes from the monitor's own result files (and the runs' deploy records):
the page draws without the registry, and a result file it cannot read is named and skipped, never fatal.
Links are relative to the page: it and its plots are served from the same folder.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from keiko.contract import (
    DriftGateResult,
    GateResult,
    JoinOutcomesResult,
    Metrics,
    ModelLayout,
    OnlineGateResult,
    ProductionChange,
    RunLayout,
    StepResult,
    VolumeGateResult,
    parse,
)
from keiko.errors import KeikoError
from keiko.pipeline import MONITOR_DAG, MONITOR_TASK_IDS, STEPS
from keiko.report.plots import KL_FLOOR, _figure, _png

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from keiko.modeldef import ModelDefinition, Monitor
    from keiko.registry import Registry
    from keiko.storage import ArtifactStore

TABLE_DAYS = 30
PLOT_WINDOWS = (30, 90)  # days per picture: the last month in detail, the last quarter for slow changes
NONE = "–"  # what a table shows for a value that does not exist
PANEL_HEIGHT = 1.6  # inches per panel of a picture
VERSION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
# A title at a fixed height: placing it clear of the ticks costs matplotlib more than drawing the panel.
_TITLE = {"fontsize": "small", "loc": "left", "y": 1.0, "pad": 4}
_ALARM = {"color": "#d62728", "alpha": 0.08, "linewidth": 0}  # the shading of a day with an alarm
S = TypeVar("S", bound=StepResult)


class Alarm(NamedTuple):
    """One failed expectation of a monitor gate on one day."""

    task: str
    suite: str  # the check and the part it ran on: "online v3", "divergence v3", "answered", "trend a..b"
    column: str
    observed: str
    expected: str

    @property
    def check(self) -> str:
        return self.suite.partition(" ")[0]

    @property
    def version(self) -> int | None:
        """The serving version the check judged, for the per-version suites."""
        part = self.suite.partition(" ")[2]
        return int(part[1:]) if part[:1] == "v" and part[1:].isdigit() else None

    def describe(self) -> str:
        """One line: `gate_online calibration v3 1.31 (expected [0.85, 1.15])`; the check is named when the
        gate has more than one."""
        check = [] if self.check == STEPS[self.task].name else [self.check]
        part = self.suite.partition(" ")[2]
        what = " ".join([self.task, *check, self.column, *([part] if part else [])])
        return f"{what} {self.observed} (expected {self.expected})"


@dataclass(frozen=True)
class VersionDay:
    """One serving version on one monitored day. None: the step that measures it has no readable result."""

    version: int
    answered: int | None  # rows it answered (join_outcomes)
    share: float | None  # of the day's answered rows: its traffic share
    online: Metrics | None
    offline: Metrics | None  # its own test-day evaluation
    logloss_gap: float | None  # online / offline logloss - 1
    auc_drop: float | None  # offline - online AUC
    divergence: tuple[str, float] | None  # the field (or `score`) with the largest KL from training, and that KL
    unseen: tuple[str, float] | None  # the field with the largest share of values training never saw, and it


@dataclass(frozen=True)
class DaySeries:
    """What the monitor found on one day: a day with only some step results is still a day."""

    day: str
    versions: tuple[VersionDay, ...]  # by version number
    population: int | None  # the rows the model answers for that day (join_outcomes)
    answered_share: float | None
    bayes_optimal_logloss: float | None  # synthetic worlds only
    training_rows: dict[str, int]  # gate_volume's trend points: model run day -> its training rows
    offline_logloss: dict[str, float]  # ... -> its test logloss
    rows_daily_change: float | None
    logloss_daily_change: float | None
    alarms: tuple[Alarm, ...]
    docs: dict[str, str]  # task -> the Data Docs index a failed gate rendered
    unreadable: tuple[str, ...]  # tasks whose result file did not parse (another keiko version, or edited)

    def version(self, number: int) -> VersionDay | None:
        return next((v for v in self.versions if v.version == number), None)


class Change(NamedTuple):
    """A change of production that moved the alias: the day it is drawn at and the version it put in."""

    day: str
    version: int
    action: str  # deploy, rollback


# ------------------------------------------------------------------------------------------ reading


def _date(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _start(last: str, days: int) -> str:
    """The first of the `days` calendar days ending at `last`."""
    return (dt.date.fromisoformat(last) - dt.timedelta(days=days - 1)).isoformat()


def _largest(values: dict[str, float] | None) -> tuple[str, float] | None:
    return max(values.items(), key=lambda item: item[1], default=None) if values else None


def monitor_series(
    store: ArtifactStore, model: str, days: int | None = None, until: str | None = None
) -> list[DaySeries]:
    """Every monitored day of `model`, oldest first: with `days`, those of the `days` calendar days ending at
    `until` (or at the newest monitored day). Calendar days, not runs: a stretch the monitor did not run stays a
    gap in the plots instead of pulling older days in."""
    layout = ModelLayout(store, model)
    files = {task: dict(layout.results_of_every_run(task)) for task in MONITOR_TASK_IDS}
    monitored = sorted({day for by_day in files.values() for day in by_day if _date(day)})
    end = until or (monitored[-1] if monitored else "")
    first = _start(end, days) if days and end else ""
    series = []
    for day in (d for d in monitored if first <= d <= end):
        unreadable: list[str] = []

        def read(kind: type[S], day: str = day, unreadable: list[str] = unreadable) -> S | None:
            uri = files[kind.TASK].get(day)
            if uri is None:
                return None
            try:
                return parse(store.read_bytes(uri), kind, uri)
            except KeikoError:  # one bad file costs its own figures, not the page
                unreadable.append(kind.TASK)
                return None

        join, online = read(JoinOutcomesResult), read(OnlineGateResult)
        drift, volume = read(DriftGateResult), read(VolumeGateResult)
        series.append(_day_series(day, join, online, drift, volume, tuple(unreadable)))
    return series


def _day_series(
    day: str,
    join: JoinOutcomesResult | None,
    online: OnlineGateResult | None,
    drift: DriftGateResult | None,
    volume: VolumeGateResult | None,
    unreadable: tuple[str, ...],
) -> DaySeries:
    served = join.versions if join else {}
    judged = online.versions if online else {}
    divergence = drift.divergence if drift else {}
    unseen = drift.unseen_share if drift else {}
    versions = []
    for key in sorted({*served, *judged, *divergence, *unseen}, key=int):
        figures = judged.get(key)
        versions.append(
            VersionDay(
                version=int(key),
                answered=served.get(key),
                share=served.get(key, 0) / join.answered if join and join.answered else None,
                online=figures.online if figures else None,
                offline=figures.offline if figures else None,
                logloss_gap=figures.logloss_gap if figures else None,
                auc_drop=figures.auc_drop if figures else None,
                divergence=_largest(divergence.get(key)),
                unseen=_largest(unseen.get(key)),
            )
        )
    if volume:
        answered_share: float | None = volume.answered_share
    else:  # gate_volume has not run (or its file is unreadable): the same share, from the join
        answered_share = join.answered / join.population if join and join.population else None
    gates: list[GateResult] = [gate for gate in (online, drift, volume) if gate is not None]
    return DaySeries(
        day=day,
        versions=tuple(versions),
        population=join.population if join else None,
        answered_share=answered_share,
        bayes_optimal_logloss=join.bayes_optimal_logloss if join else None,
        training_rows=dict(volume.training_rows) if volume else {},
        offline_logloss=dict(volume.offline_logloss) if volume else {},
        rows_daily_change=volume.rows_daily_change if volume else None,
        logloss_daily_change=volume.logloss_daily_change if volume else None,
        alarms=tuple(
            Alarm(gate.TASK, o.suite, o.column, o.observed, o.expected)
            for gate in gates
            for o in gate.outcomes
            if not o.passed
        ),
        docs={gate.TASK: gate.data_docs for gate in gates if gate.data_docs},
        unreadable=unreadable,
    )


def production_changes(store: ArtifactStore, model: str) -> list[Change]:
    """Every change of production that moved the alias, oldest first: the runs' deploys and rollbacks (drawn at
    the run's day, the axis the monitor's days share) and `keiko rollback`'s (at the day it started)."""
    runs = RunLayout(store, model, "*")
    # ModelLayout names one `keiko rollback` record by its time; the folder of any of them holds them all.
    commands = ModelLayout(store, model).rollback_record(dt.datetime.now(dt.UTC)).rsplit("/", 1)[0] + "/*"
    changes = []
    for pattern in (runs.deploy_record, runs.rollback_record, commands):
        for uri in store.glob(pattern):
            try:
                record = parse(store.read_bytes(uri), ProductionChange, uri)
            except KeikoError:  # not a production change this keiko reads: no marker
                continue
            day = uri.rsplit("/", 2)[-2] if pattern != commands else record.started_at[:10]
            if record.success and record.alias_moved and _date(day):
                changes.append(Change(day, record.to_version, record.action))
    return sorted(changes)


# ------------------------------------------------------------------------------------------ formatting


def _number(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    return format(value, spec)


def _per_version(day: DaySeries, show: Callable[[VersionDay], str]) -> list[str]:
    """`show` of each version of the day, named by its version when the day had more than one."""
    return [(f"v{v.version} " if len(day.versions) > 1 else "") + show(v) for v in day.versions]


def _traffic(v: VersionDay) -> str:
    return f"v{v.version} {_number(v.share, '.0%')}"


def _logloss(v: VersionDay) -> str:
    online = _number(v.online.logloss if v.online else None, ".5f")
    if v.offline is None:
        return online
    return f"{online} / {v.offline.logloss:.5f} ({_number(v.logloss_gap, '+.1%')})"


def _auc(v: VersionDay) -> str:
    online = _number(v.online.auc if v.online else None, ".4f")
    return f"{online} / {v.offline.auc:.4f}" if v.offline else online


def _calibration(v: VersionDay) -> str:
    return _number(v.online.calibration if v.online else None, ".3f")


def _kl(v: VersionDay) -> str:
    return f"{v.divergence[0]} {v.divergence[1]:.4f}" if v.divergence else NONE


def _unseen(v: VersionDay) -> str:
    return f"{v.unseen[0]} {v.unseen[1]:.2%}" if v.unseen else NONE


def _changes_on(changes: Iterable[Change], day: str) -> list[str]:
    return [f"{c.action} v{c.version}" for c in changes if c.day == day]


def summary_lines(store: ArtifactStore, definition: ModelDefinition, days: int = 14) -> list[str]:
    """What `keiko monitor <model> [--days N]` prints: a header, a line per monitored day of the last `days`
    (oldest first, so the newest is next to the prompt), the trend gate_volume fitted, the page's URI."""
    model = definition.name
    series = monitor_series(store, model, days)
    if not series:
        return [f"{model}: no monitor run yet: run `keiko run --model {model} --ds <day> --monitor`"]
    changes = production_changes(store, model)
    alarmed = sum(1 for day in series if day.alarms)
    lines = [
        f"{model} monitor: {len(series)} day(s) {series[0].day}..{series[-1].day} (the last {days} days), "
        f"{alarmed} with alarms"
    ]
    for day in series:
        verdict = "ALARM: " + "; ".join(a.describe() for a in day.alarms) if day.alarms else "ok"
        if day.unreadable:
            verdict += f" (unreadable: {', '.join(day.unreadable)})"
        parts = [
            day.day,
            " ".join(_traffic(v) for v in day.versions) or "no versions",
            *(f"[{change}]" for change in _changes_on(changes, day.day)),
            "logloss " + ", ".join(_per_version(day, _logloss)),
            *([f"Bayes-optimal {day.bayes_optimal_logloss:.5f}"] if day.bayes_optimal_logloss is not None else []),
            "calib " + ", ".join(_per_version(day, _calibration)),
            "AUC " + ", ".join(_per_version(day, _auc)),
            f"answered {_number(day.answered_share, '.2%')}",
            "KL " + ", ".join(_per_version(day, _kl)),
            verdict,
        ]
        lines.append("  ".join(parts))
    lines.append(_trend_line(series, definition.config.monitor))
    lines.append(f"page: {ModelLayout(store, model).monitoring_page}")
    return lines


def _trend_line(series: list[DaySeries], monitor: Monitor) -> str:
    newest = next((day for day in reversed(series) if day.training_rows), None)
    if newest is None:
        return "trend: no gate_volume result with model runs in these days"
    runs = sorted(newest.training_rows)
    rows, loss = newest.rows_daily_change, newest.logloss_daily_change
    if rows is None or loss is None:
        return f"trend ({newest.day}): {len(runs)} run(s), too few for a line"
    return (
        f"trend ({newest.day}, over {len(runs)} runs {runs[0]}..{runs[-1]}): training rows {rows:+.2%}/day "
        f"(limit -{monitor.trend.max_daily_rows_decline:.1%}), offline logloss {loss:+.2%}/day "
        f"(limit +{monitor.trend.max_daily_logloss_rise:.1%})"
    )


# ------------------------------------------------------------------------------------------ pictures


def _x(day: str) -> dt.datetime:
    """A day where the pictures draw it."""
    return dt.datetime.fromisoformat(day)


def _colour(version: int) -> str:
    """A version's colour: never red (alarms) nor grey (thresholds, fits, Bayes-optimal)."""
    return VERSION_COLOURS[version % len(VERSION_COLOURS)]


def _line(axes: Axes, points: list[tuple[str, float]], alarmed: set[str], colour: str, **style: object) -> None:
    """`points` (day, value) joined day to day, broken where days are missing (no monitor result is no
    value), and red on the `alarmed` days."""
    xs: list[dt.datetime] = []
    ys: list[float] = []
    for day, y in points:
        if xs and _x(day) - xs[-1] > dt.timedelta(days=1):
            xs.append(xs[-1] + dt.timedelta(days=1))
            ys.append(math.nan)
        xs.append(_x(day))
        ys.append(y)
    axes.plot(xs, ys, color=colour, **style)
    red = [(_x(day), y) for day, y in points if day in alarmed]
    if red:
        axes.scatter(*zip(*red, strict=True), color="#d62728", s=28, zorder=4)


def _version_lines(
    axes: Axes,
    series: list[DaySeries],
    value: Callable[[VersionDay], float | None],
    fired: Callable[[Alarm], bool],
    **style: object,
) -> None:
    """One line per version of `value` over the days, its points red on the days one of its alarms `fired`."""
    for number in sorted({v.version for day in series for v in day.versions}):
        points = [
            (day.day, y)
            for day in series
            if (v := day.version(number)) is not None and (y := value(v)) is not None and math.isfinite(y)
        ]
        alarmed = {day.day for day in series if any(fired(a) and a.version == number for a in day.alarms)}
        _line(axes, points, alarmed, _colour(number), **style)


def _picture(series: list[DaySeries], changes: list[Change], monitor: Monitor, first: str, last: str) -> bytes:
    import matplotlib.dates as mdates
    from matplotlib.ticker import FormatStrFormatter, NullFormatter, PercentFormatter

    panels = 6
    figure = _figure(9.0, PANEL_HEIGHT * panels + 0.4, left=0.9)
    figure.subplots_adjust(hspace=0.4)
    logloss, calibration, kl, unseen, answered, rows = figure.subplots(panels, 1, sharex=True)
    versions = sorted({v.version for day in series for v in day.versions})

    logloss.set_title("online logloss (solid) vs the version's offline test logloss (dashed)", **_TITLE)
    _version_lines(
        logloss,
        series,
        lambda v: v.online.logloss if v.online else None,
        lambda a: a.column in ("logloss_gap", "auc_drop"),
        marker="o",
        markersize=3,
    )
    _version_lines(
        logloss, series, lambda v: v.offline.logloss if v.offline else None, lambda _: False, ls="--", marker="x"
    )
    bayes = [(_x(d.day), d.bayes_optimal_logloss) for d in series if d.bayes_optimal_logloss is not None]
    if bayes:
        logloss.plot(*zip(*bayes, strict=True), color="#7f7f7f", ls=":", marker=".", label="Bayes-optimal")
    for number in versions:  # the legend names each version's colour once
        logloss.plot([], [], color=_colour(number), label=f"v{number}")
    # Above the panel, right of its title: inside, it would hide the newest days.
    logloss.legend(loc="lower right", bbox_to_anchor=(1, 1), fontsize="x-small", ncols=8, frameon=False)

    tolerance = monitor.calibration_tolerance
    calibration.set_title(f"calibration: sum of predictions / sum of outcomes (band: 1 ± {tolerance:g})", **_TITLE)
    calibration.axhspan(1 - tolerance, 1 + tolerance, color="#2ca02c", alpha=0.12)
    calibration.axhline(1, color="#999999", linewidth=0.8)
    _version_lines(
        calibration,
        series,
        lambda v: v.online.calibration if v.online else None,
        lambda a: a.task == "gate_online" and a.column == "calibration",
        marker="o",
        markersize=3,
    )

    # The drawn threshold is monitor.max_kl_divergence; a field with an override is judged on its own (the table).
    kl.set_title("largest KL divergence of a served field from the version's training (log scale)", **_TITLE)
    kl.axhline(monitor.max_kl_divergence, color="#d62728", ls="--", linewidth=1)
    kl.set_yscale("log")
    kl.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    kl.yaxis.set_minor_formatter(NullFormatter())
    _version_lines(
        kl,
        series,
        lambda v: max(v.divergence[1], KL_FLOOR) if v.divergence else None,
        lambda a: a.task == "gate_drift" and a.check == "divergence",
        marker="o",
        markersize=3,
    )
    # A decade at least around the values and the threshold: a log axis shows no labelled tick in less.
    drawn = [max(v.divergence[1], KL_FLOOR) for d in series for v in d.versions if v.divergence]
    drawn = [k for k in drawn if math.isfinite(k)]
    low, high = min([*drawn, monitor.max_kl_divergence]), max([*drawn, monitor.max_kl_divergence])
    kl.set_ylim(low / 2, max(high * 2, low * 20))

    unseen.set_title("largest share of a field's served values training never saw", **_TITLE)
    unseen.axhline(monitor.max_unseen_share, color="#d62728", ls="--", linewidth=1)
    unseen.yaxis.set_major_formatter(PercentFormatter(1.0))
    # None unseen is the usual day: 0 in view, and the threshold with room above it.
    shares_drawn = [v.unseen[1] for d in series for v in d.versions if v.unseen]
    unseen.set_ylim(0, max([2 * monitor.max_unseen_share, *(share * 1.1 for share in shares_drawn)]))
    _version_lines(
        unseen,
        series,
        lambda v: v.unseen[1] if v.unseen else None,
        lambda a: a.task == "gate_drift" and a.check == "unseen",
        marker="o",
        markersize=3,
    )

    band = monitor.answered_share
    answered.set_title(f"answered share of the day's population (band {band.min:g}..{band.max:g})", **_TITLE)
    answered.axhspan(band.min, band.max, color="#2ca02c", alpha=0.12)
    answered.yaxis.set_major_formatter(PercentFormatter(1.0))
    shares = [(d.day, d.answered_share) for d in series if d.answered_share is not None]
    alarmed = {d.day for d in series if any(a.check == "answered" for a in d.alarms)}
    _line(answered, shares, alarmed, "#1f77b4", marker="o", markersize=3)

    _trend_panel(rows, series, monitor, first)

    start, end = _x(first) - dt.timedelta(hours=12), _x(last) + dt.timedelta(hours=12)
    for axes in (logloss, calibration, kl, unseen, answered, rows):
        for day in series:
            if day.alarms:
                axes.axvspan(_x(day.day) - dt.timedelta(hours=12), _x(day.day) + dt.timedelta(hours=12), **_ALARM)
        for change in changes:
            if first <= change.day <= last:
                axes.axvline(_x(change.day), color="#555555", ls=":", linewidth=1)
        axes.tick_params(which="both", labelsize="x-small")
    for change in (c for c in changes if first <= c.day <= last):
        label = f"v{change.version}" + (" (rollback)" if change.action == "rollback" else "")
        logloss.text(
            _x(change.day), 0.97, f" {label}", transform=logloss.get_xaxis_transform(), fontsize="x-small", va="top"
        )
    locator = mdates.AutoDateLocator(maxticks=12)
    rows.xaxis.set_major_locator(locator)
    rows.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    rows.set_xlim(start, end)
    return _png(figure)


def _trend_panel(axes: Axes, series: list[DaySeries], monitor: Monitor, first: str) -> None:
    """Training rows of each model run the monitor's trend saw, and the newest line gate_volume fitted: the
    decline a trailing median follows down, drawn as its slope."""
    from matplotlib.ticker import StrMethodFormatter

    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    points: dict[str, int] = {}
    for day in series:  # a run's training rows do not change: the newest result's points include the older
        points |= day.training_rows
    shown = sorted((d, n) for d, n in points.items() if d >= first)
    axes.set_title(
        f"training rows per model run; line: gate_volume's fit (limit -{monitor.trend.max_daily_rows_decline:.1%}/day)",
        **_TITLE,
    )
    if shown:
        axes.plot([_x(d) for d, _ in shown], [n for _, n in shown], color="#1f77b4", marker="o", ms=3, ls="")
    newest = next((day for day in reversed(series) if day.rows_daily_change is not None), None)
    if newest is not None and newest.rows_daily_change is not None:
        runs = sorted(newest.training_rows)
        ordinals = [_x(d).toordinal() for d in runs]
        centre = sum(ordinals) / len(ordinals)
        # gate_volume fits log(rows) against the day: the line passes through the geometric mean at the mean day.
        level = math.exp(sum(math.log(newest.training_rows[d]) for d in runs) / len(runs))
        fitted = [level * (1 + newest.rows_daily_change) ** (o - centre) for o in ordinals]
        failed = any(a.check == "trend" and a.column.startswith("training_rows") for a in newest.alarms)
        axes.plot([_x(d) for d in runs], fitted, color="#d62728" if failed else "#7f7f7f", linewidth=1.2)


# ------------------------------------------------------------------------------------------ the page


def _relative(uri: str, page: str) -> str | None:
    """`uri` as a link from the page's folder, or None if it is not under it."""
    folder = page.rsplit("/", 1)[0] + "/"
    return uri.removeprefix(folder) if uri.startswith(folder) else None


def write_monitoring_page(store: ArtifactStore, registry: Registry | None, definition: ModelDefinition) -> str:
    """Draw the page and its pictures from the monitor results of the last 90 days; returns the page's URI.

    `registry` is not read: every figure shown is in the monitor's own results, so the page draws when the
    registry is down (the step runner passes its own)."""
    model, monitor = definition.name, definition.config.monitor
    layout = ModelLayout(store, model)
    series = monitor_series(store, model, max(PLOT_WINDOWS))
    changes = production_changes(store, model) if series else []
    plots: list[tuple[int, str]] = []
    drawn = 0
    for window in PLOT_WINDOWS if series else ():
        last = series[-1].day
        shown = [day for day in series if day.day >= _start(last, window)]
        if len(shown) == drawn:  # no day older than the narrower window's: the same picture again
            continue
        drawn = len(shown)
        uri = layout.monitoring_plot(f"last_{window}_days")
        store.write_bytes(uri, _picture(shown, changes, monitor, shown[0].day, last))
        plots.append((window, _relative(uri, layout.monitoring_page) or uri))
    page = _render(store, definition, series, changes, plots)
    store.write_bytes(layout.monitoring_page, page.encode())
    return layout.monitoring_page


_STYLE = """
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; margin: 0 auto;
         max-width: 1400px; padding: 16px 24px 48px; background: #fff; }
  h1 { font-size: 22px; margin: 0 0 4px; }
  h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
  table { border-collapse: collapse; margin: 6px 0; }
  th, td { text-align: left; padding: 3px 10px 3px 0; vertical-align: top; border-bottom: 1px solid #eee; }
  th { font-weight: 600; color: #555; }
  td { font-variant-numeric: tabular-nums; white-space: nowrap; }
  td.alarms { white-space: normal; max-width: 420px; }
  code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
  .banner { padding: 12px 16px; border-radius: 6px; margin-bottom: 8px; }
  .banner.failed { background: #fdecea; border-left: 6px solid #c62828; }
  .banner.complete { background: #e8f5e9; border-left: 6px solid #2e7d32; }
  .banner.incomplete { background: #fff8e1; border-left: 6px solid #f9a825; }
  .outcome { font-size: 18px; font-weight: 700; }
  .muted { color: #777; }
  .alarm { color: #c62828; font-weight: 600; }
  .ok { color: #2e7d32; }
  tr.alarmed td { background: #fdecea; }
  img { max-width: 100%; border: 1px solid #eee; }
"""
_COLUMNS = (
    "day", "versions (traffic)", "logloss online / offline (gap)", "calibration", "AUC online / offline",
    "answered", "largest KL", "max unseen", "alarms",
)  # fmt: skip


def _cell(lines: Iterable[str]) -> str:
    return "<td>" + "<br>".join(html.escape(line) for line in lines) + "</td>"


def _alarm_cell(day: DaySeries, page: str) -> str:
    if not day.alarms and not day.unreadable:
        return '<td class="alarms"><span class="ok">ok</span></td>'
    parts = [f'<div class="alarm">{html.escape(alarm.describe())}</div>' for alarm in day.alarms]
    parts += [f'<div class="alarm">unreadable result: {html.escape(task)}</div>' for task in day.unreadable]
    links = [(task, link) for task, uri in day.docs.items() if (link := _relative(uri, page))]
    parts += [f'<a href="{html.escape(link)}">{html.escape(task)} Data Docs</a>' for task, link in links]
    return f'<td class="alarms">{" ".join(parts)}</td>'


def _row(day: DaySeries, changes: list[Change], page: str) -> str:
    traffic = [*(_traffic(v) for v in day.versions), *_changes_on(changes, day.day)] or [NONE]
    cells = [
        _cell([day.day]),
        _cell(traffic),
        _cell(_per_version(day, _logloss)),
        _cell(_per_version(day, _calibration)),
        _cell(_per_version(day, _auc)),
        _cell([_number(day.answered_share, ".2%")]),
        _cell(_per_version(day, _kl)),
        _cell(_per_version(day, _unseen)),
        _alarm_cell(day, page),
    ]
    opening = '<tr class="alarmed">' if day.alarms else "<tr>"
    return opening + "".join(cells) + "</tr>"


def _thresholds(monitor: Monitor) -> str:
    overrides = ", ".join(f"{field} {value:g}" for field, value in monitor.kl_divergence.items())
    unseen = ", ".join(f"{field} {value:g}" for field, value in monitor.unseen_share.items())
    return (
        f"calibration 1 ± {monitor.calibration_tolerance:g}; logloss gap at most {monitor.max_logloss_gap:+.0%}; "
        f"AUC drop at most {monitor.max_auc_drop:g}; KL below {monitor.max_kl_divergence:g}"
        + (f" ({overrides})" if overrides else "")
        + f"; unseen share at most {monitor.max_unseen_share:.1%}"
        + (f" ({unseen})" if unseen else "")
        + f"; answered share {monitor.answered_share.min:g}..{monitor.answered_share.max:g}; trend: training rows "
        f"at most -{monitor.trend.max_daily_rows_decline:.1%}/day, offline logloss at most "
        f"+{monitor.trend.max_daily_logloss_rise:.1%}/day over {monitor.trend.runs} runs"
    )


def _render(
    store: ArtifactStore,
    definition: ModelDefinition,
    series: list[DaySeries],
    changes: list[Change],
    plots: list[tuple[int, str]],
) -> str:
    model = definition.name
    page = ModelLayout(store, model).monitoring_page
    escape = html.escape
    table = [day for day in series if day.day >= _start(series[-1].day, TABLE_DAYS)] if series else []
    if not table:
        state, text = "incomplete", "no monitor run yet"
        days = (
            f"<p>No monitor run has written a result yet: run <code>keiko run --model {escape(model)} --ds "
            "&lt;day&gt; --monitor</code> (or let the monitor DAG run).</p>"
        )
    else:
        newest = table[-1]
        state = "failed" if newest.alarms else "complete"
        text = f"newest day {newest.day}: " + (f"{len(newest.alarms)} alarm(s)" if newest.alarms else "ok")
        rows = "\n".join(_row(day, changes, page) for day in reversed(table))  # the newest first
        header = "".join(f"<th>{escape(name)}</th>" for name in _COLUMNS)
        days = f"<table>\n<tr>{header}</tr>\n{rows}\n</table>"
    images = "\n".join(
        f'<h3>the last {window} days</h3>\n<img src="{escape(link)}" alt="monitor figures, the last {window} days">'
        for window, link in plots
    )
    span = (
        f"{len(series)} monitored day(s) in the last {max(PLOT_WINDOWS)} days, {series[0].day} .. {series[-1].day}"
        if series
        else "no monitored day"
    )
    folder = RunLayout(store, model, "<day>", MONITOR_DAG).uri("")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>keiko {escape(model)} monitoring: {escape(text)}</title>
<style>{_STYLE}</style>
</head>
<body>
<section id="header">
  <div class="banner {state}">
    <h1>{escape(model)} &middot; monitoring</h1>
    <div class="outcome">{escape(text)}</div>
  </div>
  <p>{escape(span)}; the table shows the last {TABLE_DAYS} days, the pictures the last
  {" and ".join(map(str, PLOT_WINDOWS))}. Dotted vertical lines: changes of production (the version they put
  in); shaded days: an alarm.</p>
  <p class="muted">Thresholds (model.yaml monitor): {escape(_thresholds(definition.config.monitor))}.</p>
  <p class="muted">Redrawn after every monitor step. Each day's results and Data Docs: <code>{escape(folder)}</code>;
  in a terminal: <code>keiko monitor {escape(model)} --days {TABLE_DAYS}</code>.</p>
</section>
<section id="days">
<h2>Days</h2>
{days}
</section>
<section id="plots">
<h2>Pictures</h2>
{images or '<p class="muted">nothing to draw yet</p>'}
</section>
</body>
</html>
"""
