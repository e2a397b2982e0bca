"""A bar chart laid out on the server, for the template to draw as inline SVG.

No JavaScript and no external asset: the geometry is computed here, the template only writes
<rect> and <text> elements, and colours come from the admin's CSS variables (so the chart
follows the light and dark themes).
"""

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, Decimal

from usage.templatetags.billing_format import credits

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 32
MAX_X_LABELS = 10
MAX_GRIDLINES = 5  # above the baseline
# A gridline's label ends 8 units left of the plot (the template), in 11px digits of at most
# 7 units each, with a margin.
LABEL_GAP, LABEL_CHAR_WIDTH = 12, 7


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # the tooltip: day and exact figure
    highlight: bool = False  # today: a day still being written
    day: date | None = None  # the day and its figure, for the chart's table (a screen reader
    figure: str = ""  # reads no bar: their titles are a pointer's tooltips)


@dataclass(frozen=True)
class Tick:
    position: float  # y for gridlines, x for day labels
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_bottom: int
    bars: list[Bar]
    gridlines: list[Tick]
    day_labels: list[Tick]
    empty: bool


def daily_bar_chart(
    points: list[tuple[date, Decimal]], *, unit: str = "credits", highlight: date | None = None
) -> BarChart:
    plot_height = HEIGHT - TOP - BOTTOM
    peak = max((value for _, value in points), default=Decimal("0"))
    step, steps = _axis(peak)
    top = step * steps
    gridlines = [
        Tick(
            position=round(TOP + plot_height - plot_height * index / max(steps, 1), 2),
            label=_figure(step * index),
        )
        for index in range(steps + 1)
    ]
    # Room for the longest label, written in full (100,000,000 or 0.0000002 would be cut).
    left = max(LEFT, LABEL_GAP + LABEL_CHAR_WIDTH * max(len(tick.label) for tick in gridlines))
    plot_width = WIDTH - left - RIGHT
    slot = plot_width / max(len(points), 1)
    bar_width = max(slot * 0.72, 1.0)
    bars = []
    for index, (day, value) in enumerate(points):
        height = float(value / top) * plot_height if top else 0.0
        if value > 0:
            height = max(height, 1.0)  # a day with usage never vanishes
        bars.append(
            Bar(
                x=round(left + index * slot + (slot - bar_width) / 2, 2),
                y=round(TOP + plot_height - height, 2),
                width=round(bar_width, 2),
                height=round(height, 2),
                title=f"{day:%Y-%m-%d}: {credits(value)} {unit}"
                + (" so far" if day == highlight else ""),
                highlight=day == highlight,
                day=day,
                figure=credits(value),
            )
        )
    every = max(1, -(-len(points) // MAX_X_LABELS))
    # "Nov 4", or "Dec 30 2026" and "Jan 2 2027" on an axis across a new year.
    years = len({day.year for day, _ in points}) > 1
    day_labels = [
        Tick(
            position=round(left + index * slot + slot / 2, 2),
            label=f"{day:%b} {day.day}" + (f" {day.year}" if years else ""),
        )
        for index, (day, _) in enumerate(points)
        if index % every == 0
    ]
    return BarChart(
        width=WIDTH,
        height=HEIGHT,
        plot_left=left,
        plot_right=WIDTH - RIGHT,
        plot_bottom=TOP + plot_height,
        bars=bars,
        gridlines=gridlines,
        day_labels=day_labels,
        empty=peak == 0,
    )


def _axis(peak: Decimal) -> tuple[Decimal, int]:
    """The gridlines' step and how many steps the axis takes to reach `peak`: the smallest
    step of 1, 2, 2.5 or 5 × 10^k that reaches it in at most MAX_GRIDLINES steps (three to five
    of them), so the labels step evenly and read exactly: 0.005, 0.01 ... 0.025 up to 0.025
    (a quarter of a round top read 0.0062, 0.0125, 0.0188). Nothing to scale: the baseline
    alone, not lines saying 0."""
    if peak <= 0:
        return Decimal("0"), 0
    magnitude = Decimal(1).scaleb((peak / MAX_GRIDLINES).adjusted())
    for multiple in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        step = multiple * magnitude
        if step * MAX_GRIDLINES >= peak:
            break
    return step, int((peak / step).to_integral_value(rounding=ROUND_CEILING))


def _figure(value: Decimal) -> str:
    """A gridline's value, exactly and plainly: 0.0025, 2.5, 1,000 (never 1E+3)."""
    return f"{value.normalize():,f}"
