"""What the commands write is UTF-8, whatever the locale's encoding: `export_user` promises a
UTF-8 document and `usage_month_totals --format csv` the billing dashboard's (UTF-8) file byte
for byte. Under a locale whose encoding is not UTF-8 (a Latin-1 server's, or an ASCII one) both
ended in a UnicodeEncodeError traceback, exit 1, at the first username or name beyond it
(zoë): a month-end close from cron that wrote half a file."""

import json
import os
import subprocess
import sys

import pytest
from django.db import connection
from django.utils import timezone

from pantheon.testing.processes import ROOT
from pantheon.testing.servers import postgres_url
from usage.tests.factories import ledger_event


def command(*args: str, encoding: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": postgres_url(connection.settings_dict),
            "DJANGO_SETTINGS_MODULE": "pantheon.settings",
            "PYTHONIOENCODING": encoding,  # as a locale of that encoding gives Python
        },
        capture_output=True,
        timeout=120,
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_the_documents_are_utf8_whatever_the_locale(django_user_model, make_agent, encoding):
    zoe = django_user_model.objects.create_user("zo\u00eb", password="pw-zoe-123")
    make_agent(zoe, "zoe", name="\u4f1a\u8bae Zo\u00eb")  # "meeting" in Chinese
    called = timezone.now()  # read once: the month's end may pass while the export runs
    ledger_event(zoe, at=called)

    exported = command("export_user", "zo\u00eb", encoding=encoding)
    totals = command(
        "usage_month_totals",
        "--month",
        f"{called:%Y-%m}",
        "--format",
        "csv",
        encoding=encoding,
    )

    assert exported.returncode == 0, exported.stderr.decode()[-2000:]
    document = json.loads(exported.stdout.decode("utf-8"))
    assert document["agents"][0]["name"] == "\u4f1a\u8bae Zo\u00eb"
    assert totals.returncode == 0, totals.stderr.decode()[-2000:]
    assert totals.stdout.decode("utf-8").splitlines()[1].startswith("zo\u00eb,1,")
