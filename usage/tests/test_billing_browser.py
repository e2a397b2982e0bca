"""A real browser: an Analyst logs into the admin with headless Chromium and reads the billing
dashboard; the chart and the table are there and the totals shown are the ledger's."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, Sum

from pantheon.testing.browser import headless_chromium
from pantheon.testing.servers import forget_throttle_history
from sessions_app.models import Turn
from usage.models import LlmCallEvent
from usage.rollups import rollup_rebuild, today
from usage.templatetags.billing_format import count, credits, usd

PER_CALL = {"deepseek": Decimal("0.35"), "llama": Decimal("0.35"), "premium": Decimal("1.75")}


@pytest.fixture(autouse=True)
def _forget_console_logins():
    """The browser logs in through the console's form, whose attempts the login limits count
    (committed, as the live server's): the tests after these start with none."""
    yield
    forget_throttle_history()


@pytest.fixture
def chromium(tmp_path, monkeypatch):
    driver = headless_chromium(
        tmp_path / "chromium-profile", monkeypatch, "--window-size=1400,1000"
    )
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def at(days_ago: int, hour: int) -> datetime:
    day = today() - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture
def month_of_calls(django_user_model, ledger_row, make_agent, make_session):
    """Three users calling three aliases over the last four weeks, rolled up; calls today too."""
    users = [django_user_model.objects.create_user(name) for name in ("ada", "grace", "linus")]
    aliases = ["deepseek", "llama", "premium"]
    for days_ago in range(28, 0, -1):
        for index, user in enumerate(users):
            if (days_ago + index) % 3 == 0:
                continue
            alias = aliases[(days_ago + index) % len(aliases)]
            ledger_row(
                user,
                at=at(days_ago, 9 + index),
                alias=alias,
                credits=Decimal(days_ago % 7 + 1) * PER_CALL[alias],
                provider_cost_usd=Decimal("0.0021") * (days_ago % 4 + 1),
                input_tokens_fresh=1200 + 37 * days_ago,
                output_tokens=180 + 11 * index,
                priced=days_ago != 13,
            )
    for user, days_ago in zip(users, (0, 3, 20), strict=True):  # DAU 1, WAU 2, MAU 3
        session = make_session(user, agent=make_agent(user, "ada"))
        Turn.objects.create(
            session=session,
            turn_index=1,
            mode="direct",
            status="completed",
            user_input="hello",
            created_at=at(days_ago, 0),
        )
    rollup_rebuild()
    ledger_row(users[0], at=at(0, 0), alias="premium", credits=Decimal("4.5"))
    ledger_row(users[1], at=at(0, 0), credits=Decimal("0.8"))


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_analyst_reads_the_billing_dashboard_in_chromium(
    live_server, chromium, make_operator, month_of_calls, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    make_operator("Analyst", "analyst")
    wait = WebDriverWait(chromium, 20)

    chromium.get(f"{live_server.url}/admin/login/?next=/admin/billing/")
    chromium.find_element(By.NAME, "username").send_keys("analyst")
    chromium.find_element(By.NAME, "password").send_keys("operator-pass-123")
    chromium.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(seen.presence_of_element_located((By.ID, "daily-credits-chart")))

    assert chromium.title.startswith("Billing | Pantheon")
    # The chart: an inline SVG with one bar per day of the default 30 days.
    chart = chromium.find_element(By.ID, "daily-credits-chart")
    assert chart.tag_name == "svg"
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.bar")) == 30
    # The table: one row per user × alias, and totals equal to the ledger's.
    start = at(29, 0)
    ledger = LlmCallEvent.objects.filter(created_at__gte=start).aggregate(
        calls=Count("id"),
        credits=Sum("credits"),
        cost=Sum("provider_cost_usd"),
    )
    pairs = (
        LlmCallEvent.objects.filter(created_at__gte=start)
        .values("user", "model_alias")
        .distinct()
        .count()
    )
    table = chromium.find_element(By.ID, "usage-table")
    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == pairs >= 6
    totals = [cell.text for cell in chromium.find_elements(By.CSS_SELECTOR, "#usage-totals td")]
    assert totals[0] == count(ledger["calls"])
    assert totals[3] == credits(ledger["credits"])
    assert totals[4] == usd(ledger["cost"])
    assert chromium.find_element(By.ID, "total-credits").text == credits(ledger["credits"])
    assert chromium.find_element(By.ID, "total-calls").text == count(ledger["calls"])
    unpriced = LlmCallEvent.objects.filter(created_at__gte=start, priced=False).count()
    assert chromium.find_element(By.ID, "total-unpriced").text == count(unpriced) != "0"
    assert chromium.find_element(By.ID, "active-users").text == "1 · 2 · 3"

    # The whole page, as an operator sees it at 1400 px.
    height = chromium.execute_script("return document.documentElement.scrollHeight")
    chromium.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    screenshot = tmp_path / "billing-dashboard.png"
    assert chromium.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    print(f"\nbilling dashboard screenshot: {screenshot}")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_totals_cards_hold_big_figures_at_1100_and_1400_px(
    live_server, chromium, make_operator, django_user_model, ledger_row
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    user = django_user_model.objects.create_user("ada")
    for days_ago in range(1, 4):  # billions of tokens, thousands of credits
        ledger_row(
            user,
            at=at(days_ago, 9),
            input_tokens_fresh=10**9,
            output_tokens=345_678_901,
            credits=Decimal("123456.789"),
            provider_cost_usd=Decimal("98765.4321"),
        )
    make_operator("Analyst", "analyst")
    chromium.get(f"{live_server.url}/admin/login/?next=/admin/billing/")
    chromium.find_element(By.NAME, "username").send_keys("analyst")
    chromium.find_element(By.NAME, "password").send_keys("operator-pass-123")
    chromium.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait = WebDriverWait(chromium, 20)
    wait.until(seen.presence_of_element_located((By.ID, "daily-credits-chart")))

    for width in (1100, 1400):
        chromium.set_window_size(width, 1000)
        overflowing = chromium.execute_script(
            """return [...document.querySelectorAll('.pantheon-kpis .kpi')]
                .filter(card => card.scrollWidth > card.clientWidth
                    || [...card.children].some(part =>
                        part.getBoundingClientRect().right > card.getBoundingClientRect().right))
                .map(card => card.querySelector('.label').textContent);"""
        )
        assert overflowing == [], f"at {width} px"
        # Each on one line: "$296,296.2963" over "00" read as two figures.
        broken = chromium.execute_script(
            """return [...document.querySelectorAll('.pantheon-kpis .figure')].filter(figure => {
                    const text = document.createRange();
                    text.selectNodeContents(figure);
                    const lines = new Set([...text.getClientRects()].map(r => Math.round(r.top)));
                    return lines.size > 1;
                }).map(figure => figure.id);"""
        )
        assert broken == [], f"at {width} px"
    assert chromium.find_element(By.ID, "total-tokens").text == "3.00B · 1.04B"
