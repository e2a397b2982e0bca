import json
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta

from django.core.management.base import CommandError
from django.db import connection, transaction

from pantheon.commands import ProjectCommand, begun_month, user_named
from pantheon.figures import counted
from usage.dashboard import FIGURES, Figures, UsageRow, figure_text, per_user_csv, users_billed
from usage.rollups import database_today, day_start
from usage.selectors import next_month_start

# The table's columns after the username: the user's id, then the CSV's figures (cost before
# credits, as an invoice reads).
COLUMNS = (
    "user_id",
    "llm_calls",
    "input_tokens",
    "output_tokens",
    "provider_cost_usd",
    "credits",
    "unpriced_calls",
)
HEADINGS = {"llm_calls": "calls"}


class Command(ProjectCommand):
    requires_system_checks = []  # a reader for scripts: no URLconf or LLM stack to import
    requires_migrated_database = True  # pantheon.commands.ProjectCommand
    help = (
        "Each user's usage in one calendar month (UTC: the month the credit caps, GET usage and "
        "the monthly counters count), for a month-end close from a shell: one row per user "
        "with calls in the month, by username (a user without calls has no row), with the "
        "username, user id, calls, input and output tokens, provider cost (USD), credits and "
        "unpriced calls, and their totals. The figures are the billing dashboard's per-user "
        "CSV (rows=user) for the month's days, read by the same query (rollups for the days "
        "they hold, the ledger after them): calls are every LLM call the ledger records for "
        "the user (agent answers, routing, summaries) whatever its outcome (completed, failed, "
        "under way or lost), as GET usage and the dashboard count them; the monthly counters "
        "count completed calls only. Input tokens include cached ones and a lost call's "
        "estimate; amounts are exact, to the ledger's 10 decimals. The month under way (by "
        "the database's clock, which stamps the ledger) is reported to now. Reads only, on "
        "one snapshot: writes nothing. Prints to stdout. Exit "
        "0 when done, 1 when no user has the --user username, 2 on a usage error (a --month "
        "malformed, no such month or not begun yet), 3 when the database fails."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--month",
            type=begun_month,
            required=True,
            metavar="YYYY-MM",
            help="the calendar month (UTC), as 2026-11: this month or one before it",
        )
        parser.add_argument(
            "--format",
            choices=["table", "csv", "json"],
            default="table",
            help="table (default: aligned columns and a totals row), csv (the dashboard's "
            "per-user CSV byte for byte: no totals row) or json (one object: the users and "
            "their totals, amounts as exact decimal strings)",
        )
        parser.add_argument(
            "--user",
            metavar="USERNAME",
            help="only this user, by username, as they log in with it (default: every user "
            "with calls in the month)",
        )

    def handle(self, *args, month: date, format="table", user=None, **options):
        if isinstance(month, str):  # call_command(month="2026-11"): no parser type applied
            month = begun_month(month)
        end = (next_month_start(day_start(month)) - timedelta(days=1)).date()
        with _snapshot():
            # Today by the database's clock, which stamps the ledger: by this host's, one
            # minutes ahead at a month's end said the month closed while its calls went on.
            today = database_today()
            if month > today:
                raise CommandError(
                    f"{month:%Y-%m} has not begun: nothing to report yet (this month is "
                    f"{today:%Y-%m} UTC, by the database's clock).",
                    returncode=2,  # a usage error, as the parser's own
                )
            # Read as a login reads it (NFKC: "zoe\u0308" is zoë), or as stored (`user_named`).
            username = user_named(user).get_username() if user else ""
            report = users_billed(
                start=month, end=end, username=username, cached=False, today_is=today
            )
        if format == "csv":
            per_user_csv(self.stdout, report.rows)
        elif format == "json":
            document = {
                "month": f"{month:%Y-%m}",
                "from": month.isoformat(),
                "to": end.isoformat(),  # the month's last day, included
                "under_way": end >= today,
                "user": username or None,
                "users": [
                    {"username": row.username, "user_id": row.user_id, **_figures(row.figures)}
                    for row in report.rows
                ],
                "totals": {"users": len(report.rows), **_figures(report.totals)},
            }
            self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False))
        else:
            self.stdout.write(_table(report.rows, report.totals))
            self.stdout.write(_summary(month, end, len(report.rows), under_way=end >= today))


@contextmanager
def _snapshot() -> Iterator[None]:
    """One read-only snapshot on PostgreSQL (the rollups and the ledger after them read as of
    one moment, and nothing written); a plain transaction elsewhere, or inside one (a test's)."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql" and outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _figures(figures: Figures) -> dict:
    """Figures as the CSV writes them: amounts as exact decimal strings (`figure_text`), counts
    as whole numbers (PostgreSQL sums the rollups' counts as numeric: Decimal("487"))."""
    texts = {name: figure_text(name, getattr(figures, name)) for name in FIGURES}
    return {name: text if isinstance(text, str) else int(text) for name, text in texts.items()}


def _table(rows: list[UsageRow], totals: Figures) -> str:
    """Aligned columns (COLUMNS), a row per user and the totals, the user count in the place
    of the user id."""
    table = [["username", *(HEADINGS.get(name, name) for name in COLUMNS)]]
    for row in rows:
        cells = {"user_id": row.user_id, **_figures(row.figures)}
        table.append([row.username, *(str(cells[name]) for name in COLUMNS)])
    cells = {"user_id": counted(len(rows), "user"), **_figures(totals)}
    table.append(["TOTAL", *(str(cells[name]) for name in COLUMNS)])
    widths = [max(_shown_width(line[column]) for line in table) for column in range(len(table[0]))]
    return "\n".join(
        "  ".join(
            cell + " " * (width - _shown_width(cell))
            if column == 0
            else " " * (width - _shown_width(cell)) + cell
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    )


def _shown_width(text: str) -> int:
    """The columns a terminal gives `text`: two for a wide character (张, ｒ), none for a
    combining mark (a decomposed ë). Padded by its length, a username in Chinese pushed the
    columns after it two places right for each of its characters."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


def _summary(month: date, end: date, users: int, *, under_way: bool) -> str:
    to_now = "; under way: to now" if under_way else ""
    return (
        f"{month:%Y-%m} (UTC, {month} to {end}{to_now}): {counted(users, 'user')} with calls.\n"
        "Calls: every LLM call in the ledger (agent, routing, summary; completed, failed, under "
        "way or lost),\nas the billing dashboard's per-user CSV and GET usage count them. "
        "Amounts exact: provider cost in USD, credits."
    )
