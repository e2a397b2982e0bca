"""Two servers on one database, one of them with its clock eleven minutes off (libfaketime,
past the stale limit of ten): a turn running on one is never taken for a stale one by the
other. Before, a claim on the other host interrupted it: its user's request answered 409
`turn_conflict` after their provider had answered, and the later request ran instead."""

import threading
from pathlib import Path

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from pantheon.testing.servers import AppServer, postgres_url
from sessions_app.models import Turn
from sessions_app.tests.conftest import point_at_stub, wait_for

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("no_throttle_history"),
    pytest.mark.skipif(not FAKETIME.exists(), reason="libfaketime is not installed"),
]


def _serve(skew: str | None = None) -> AppServer:
    env = {"PANTHEON_LLM_BACKEND": "live", "STUB_API_KEY": "stub"}
    if skew is not None:
        env |= {
            "LD_PRELOAD": str(FAKETIME),
            "FAKETIME": skew,
            "FAKETIME_DONT_RESET": "1",
        }
    return AppServer(database_url=postgres_url(connection.settings_dict), env=env)


# The turn's host behind, or the claiming host ahead.
@pytest.mark.parametrize(("first_skew", "second_skew"), [("-11m", None), (None, "+11m")])
def test_a_turn_running_on_one_host_blocks_a_claim_on_a_host_with_another_clock(
    owner, make_agent, make_session, stub, first_skew, second_skew
):
    point_at_stub(stub, "slow-2500", "deepseek")
    session = make_session(owner, agent=make_agent(owner, "ada", model_alias="deepseek"))
    headers = {"Authorization": f"Token {Token.objects.create(user=owner).key}"}
    with _serve(first_skew) as first, _serve(second_skew) as second:
        answers = {}

        def post(name, base):
            answers[name] = httpx.post(
                f"{base}/api/v1/sessions/{session.pk}/turns",
                json={"message": name},
                headers=headers,
                timeout=60,
            )

        running = threading.Thread(target=post, args=("first", first.url))
        running.start()
        wait_for(lambda: stub.requests == 1, "the first turn's call")
        post("second", second.url)
        running.join()
    assert answers["second"].status_code == 409
    assert answers["second"].json()["code"] == "turn_in_progress"
    assert answers["first"].status_code == 201
    assert list(Turn.objects.values_list("status", flat=True)) == ["completed"]
