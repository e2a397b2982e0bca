"""The laptop default: every mode runs on SQLite with the demo backend, as `make run` serves it.

The hot-path reads use plain SQL (sessions_app.selectors, usage.selectors); this keeps them
portable. It runs in a subprocess because the suite itself is bound to PostgreSQL.
"""

import re

from pantheon.testing.processes import production_python

SCRIPT = r"""
import json, django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
call_command("seed_demo", "--allow-published-password", verbosity=0)  # DEBUG is off here
from django.contrib.auth.models import User
from rest_framework.test import APIClient
from sessions_app.models import Session
from usage.models import LlmCallEvent
from rest_framework.authtoken.models import Token
client = APIClient()  # by the demo user's token, as an API client signs in
token, _ = Token.objects.get_or_create(user=User.objects.get(username="demo"))
client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
results = {}
for session in Session.objects.select_related("room"):
    statuses = []
    for index in range(9):  # past the summary of turn 8
        body = client.post(
            f"/api/v1/sessions/{session.id}/turns",
            {"message": f"@ada @grace Grace, please review step {index}?"},
            format="json",
        ).json()
        statuses.append(body["status"])
    summary = client.get(f"/api/v1/sessions/{session.id}/summary").status_code
    results[session.room.current_mode] = {"statuses": sorted(set(statuses)), "summary": summary}
results["usage_calls"] = sum(
    row["llm_calls"] for row in client.get("/api/v1/usage").json()["by_model"]
)
results["events"] = LlmCallEvent.objects.count()
listed, url = [], "/api/v1/sessions?page_size=2"
while url:  # the activity cursor, whose position is a datetime, on SQLite
    page = client.get(url).json()
    listed += [(item["room"]["name"], item["turn_count"]) for item in page["results"]]
    url = page["next"]
results["sessions"] = listed
from usage.reconcile import check_counters, check_rollups, check_turns
from usage.rollups import rollup_rebuild
rollup_rebuild()
checks = [check_rollups(), check_counters(), *check_turns()]
results["drift"] = {check.name: check.drift for check in checks}
import csv
from django.test import Client
console = Client()
console.force_login(User.objects.get(username="demo"))
export = console.get("/admin/billing/export.csv")
results["export"] = [export.status_code, list(csv.DictReader(export.content.decode().splitlines()))]
print(json.dumps(results))
"""


def test_every_mode_runs_on_sqlite(tmp_path):
    results = production_python(
        SCRIPT,
        DATABASE_URL=f"sqlite:///{tmp_path / 'laptop.sqlite3'}",
        PANTHEON_LLM_BACKEND="demo",
        ALLOWED_HOSTS="testserver",
        LOG_LEVEL="ERROR",
    )

    for mode in ("manual", "roundtable", "orchestrator"):
        assert results[mode] == {"statuses": ["completed"], "summary": 200}, mode
    assert results["usage_calls"] == results["events"] > 0
    # Seeded in this order, so the last room used is listed first.
    assert results["sessions"] == [["Orchestrated", 9], ["Roundtable", 9], ["Tag room", 9]]
    # reconcile_usage's checks agree with the ledger on SQLite too, whose sums of decimals are
    # floats a few units in the last place off.
    assert set(results["drift"].values()) == {0}, results["drift"]
    # The billing export writes its sums as PostgreSQL does, to the ledger's 10 places (SQLite's
    # float sums read 0.0000725150000000000).
    status, rows = results["export"]
    assert status == 200 and len(rows) == 4  # the demo user × the four agents' aliases
    for row in rows:
        for figure in ("credits", "provider_cost_usd"):
            assert re.fullmatch(r"\d+\.\d{10}", row[figure]), row
