"""The console's own colours against Django admin's backgrounds, in its light and dark themes:
text in a tone (a status badge, a warned figure) reads at WCAG AA's 4.5:1 in both, as an
operator in dark mode or with low vision needs it to."""

import re
from pathlib import Path

import django
import pytest
from django.conf import settings

CONSOLE_CSS = Path(settings.BASE_DIR) / "pantheon" / "static" / "pantheon" / "console.css"
ADMIN_CSS = Path(django.__file__).parent / "contrib" / "admin" / "static" / "admin" / "css"

# The rules whose colour is a tone, and the backgrounds each stands on (a list's rows alternate
# between the page's and the darkened background; the dashboard's cards are either).
TONED = [
    ".pantheon-badge.ok",
    ".pantheon-badge.warn",
    ".pantheon-badge.bad",
    ".pantheon-badge.info",
    "td.warn",
]
BACKGROUNDS = ["--body-bg", "--darkened-bg"]


def variables(css: str) -> dict[str, str]:
    return dict(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{3,6})\b", css))


def block(css: str, selector: str) -> str:
    """The declarations of the first rule whose selector list starts with (or is) `selector`."""
    match = re.search(re.escape(selector) + r"\s*\{([^}]*)\}", css)
    assert match, selector
    return match.group(1)


def themes() -> dict[str, dict[str, str]]:
    """Each theme's variables, Django's and the console's: light as `:root` declares them, dark
    as `html[data-theme="dark"]` overrides them (the same values as its media query's)."""
    console = CONSOLE_CSS.read_text()
    base = variables((ADMIN_CSS / "base.css").read_text().split("}", 1)[0])
    dark_css = (ADMIN_CSS / "dark_mode.css").read_text()
    dark = variables(block(dark_css, 'html[data-theme="dark"]'))
    light_own, dark_own = {}, {}
    if 'html[data-theme="dark"]' in console:
        dark_own = variables(block(console, 'html[data-theme="dark"]'))
    if ":root {" in console:
        light_own = variables(block(console, ":root"))
    return {
        "light": {**base, **light_own},
        "dark": {**base, **light_own, **dark, **dark_own},
    }


def luminance(colour: str) -> float:
    colour = colour.lstrip("#")
    if len(colour) == 3:
        colour = "".join(c * 2 for c in colour)
    channels = [int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def resolve(value: str, theme: dict[str, str]) -> str:
    var = re.fullmatch(r"var\((--[\w-]+)\)", value.strip())
    return theme[var.group(1)] if var else value.strip()


@pytest.mark.parametrize("theme_name", ["light", "dark"])
@pytest.mark.parametrize("selector", TONED)
def test_toned_text_reads_at_4_5_to_1_on_both_backgrounds(selector, theme_name):
    theme = themes()[theme_name]
    css = CONSOLE_CSS.read_text()
    declared = re.search(r"(?<![-\w])color:\s*([^;]+);", block(css, selector))
    assert declared, selector
    colour = resolve(declared.group(1), theme)
    for background in BACKGROUNDS:
        ratio = contrast(colour, theme[background])
        on = f"{colour} on {theme[background]} ({theme_name})"
        assert ratio >= 4.5, f"{selector} {on}: {ratio:.2f}"


@pytest.mark.parametrize(
    "selector", [".pantheon-source a", ".pantheon-first-rows a", ".breadcrumbs a"]
)
def test_a_link_inside_a_sentence_is_underlined(selector):
    """The billing note's "lost call" link was told from its grey words by colour alone, 1.2:1
    (WCAG 1.4.1; axe link-in-text-block, serious): Django admin underlines no link."""
    css = re.sub(r"/\*.*?\*/", "", CONSOLE_CSS.read_text(), flags=re.S)
    rules = re.findall(r"([^{}]+)\{([^}]*)\}", css)
    underlined = [
        head
        for head, body in rules
        if "text-decoration: underline" in body
        and selector in [part.strip() for part in head.split(",")]
    ]
    assert underlined, selector


def fill(selector: str, theme: dict[str, str]) -> str:
    declared = re.search(r"fill:\s*([^;]+);", block(CONSOLE_CSS.read_text(), selector))
    assert declared, selector
    return resolve(declared.group(1), theme)


@pytest.mark.parametrize("theme_name", ["light", "dark"])
def test_the_charts_bars_stand_out_and_todays_is_the_lighter(theme_name):
    """The note under the chart calls today's bar "the lighter bar": it was --primary, lighter
    in the light theme but darker in the dark one (#264b5d), 2.0:1 against its page."""
    theme = themes()[theme_name]
    bar, today = fill(".pantheon-chart .bar", theme), fill(".pantheon-chart .bar.today", theme)
    for colour in (bar, today):
        assert contrast(colour, theme["--body-bg"]) >= 3, f"{colour} ({theme_name})"
    assert luminance(today) > luminance(bar), f"today {today}, other days {bar} ({theme_name})"


def test_the_billing_filters_buttons_keep_a_border_in_forced_colours():
    """Windows High Contrast drops backgrounds: Django's buttons have no border, and the
    dashboard's Show, Export CSV and Per-user CSV read as words among the filter links."""
    css = re.sub(r"/\*.*?\*/", "", CONSOLE_CSS.read_text(), flags=re.S)
    forced = re.search(r"@media \(forced-colors: active\)\s*\{(.*?\})\s*\}", css, re.S)
    assert forced, "no forced-colors rules"
    assert re.search(
        r"\.pantheon-filters \.button\s*\{[^}]*border:[^}]*ButtonText", forced.group(1)
    )
