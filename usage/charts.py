"""A bar chart laid out on the server, for the template to draw as inline SVG.

No JavaScript and no external asset: the geometry is computed here, the template only writes
<rect> and <text> elements, and colours come from the admin's CSS variables (so the chart
follows the light and dark themes).
"""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from usage.templatetags.billing_format import credits

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 32
MAX_X_LABELS = 10


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # the tooltip: day and exact figure
    highlight: bool = False  # today: a day still being written


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
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    peak = max((value for _, value in points), default=Decimal("0"))
    top = _nice_ceiling(peak)
    slot = plot_width / max(len(points), 1)
    bar_width = max(slot * 0.72, 1.0)
    bars = []
    for index, (day, value) in enumerate(points):
        height = float(value / top) * plot_height if top else 0.0
        if value > 0:
            height = max(height, 1.0)  # a day with usage never vanishes
        bars.append(
            Bar(
                x=round(LEFT + index * slot + (slot - bar_width) / 2, 2),
                y=round(TOP + plot_height - height, 2),
                width=round(bar_width, 2),
                height=round(height, 2),
                title=f"{day:%Y-%m-%d}: {credits(value)} {unit}"
                + (" so far" if day == highlight else ""),
                highlight=day == highlight,
            )
        )
    steps = 4
    gridlines = [
        Tick(
            position=round(TOP + plot_height - plot_height * step / steps, 2),
            label=_figure(top * step / steps),
        )
        for step in range(steps + 1)
        if top or step == 0  # nothing to scale: the baseline alone, not five lines saying 0
    ]
    every = max(1, -(-len(points) // MAX_X_LABELS))
    # "Nov 4", or "Dec 30 2026" and "Jan 2 2027" on an axis across a new year.
    years = len({day.year for day, _ in points}) > 1
    day_labels = [
        Tick(
            position=round(LEFT + index * slot + slot / 2, 2),
            label=f"{day:%b} {day.day}" + (f" {day.year}" if years else ""),
        )
        for index, (day, _) in enumerate(points)
        if index % every == 0
    ]
    return BarChart(
        width=WIDTH,
        height=HEIGHT,
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        plot_bottom=TOP + plot_height,
        bars=bars,
        gridlines=gridlines,
        day_labels=day_labels,
        empty=peak == 0,
    )


def _nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above `value` (0 stays 0)."""
    if value <= 0:
        return Decimal("0")
    magnitude = Decimal(1).scaleb(value.adjusted())
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _figure(value: Decimal) -> str:
    value = Decimal(value)
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.4f}".rstrip("0").rstrip(".")
