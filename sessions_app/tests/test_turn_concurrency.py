"""Ten clients race for one session against a live server on PostgreSQL: one turn wins."""

import asyncio
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from conftest import FakeGateway
from sessions_app.models import Message, Turn
from usage.models import LlmCallEvent

CONFLICT_BODY = {"detail": "Turn creation conflicted with concurrent writes. Please retry."}
CLIENTS = 10


class HeldGateway(FakeGateway):
    """Answers once `release` is set: the winner's turn is still running when each loser
    arrives, however slow the machine (a fixed half-second delay was not: under load a loser
    posted after the winner's turn had ended, and won a second turn)."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    async def complete(self, call):
        await asyncio.to_thread(self.release.wait, 60)
        return await super().complete(call)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_ten_concurrent_posts_give_one_201_and_nine_exact_409s(
    live_server, owner, make_agent, make_session, monkeypatch
):
    gateway = HeldGateway()
    monkeypatch.setattr("sessions_app.turns.get_gateway", lambda: gateway)
    session = make_session(owner, agent=make_agent(owner, "ada"))
    token = Token.objects.create(user=owner).key
    url = f"{live_server.url}/api/v1/sessions/{session.id}/turns"
    barrier = threading.Barrier(CLIENTS)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def post(index: int) -> None:
        with httpx.Client(headers={"Authorization": f"Token {token}"}, timeout=30) as client:
            barrier.wait()
            response = client.post(url, json={"message": f"racer {index}"})
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=post, args=(index,)) for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    # The winner's call is answered once the others have their answers (or after 30 s, for a
    # run in which more than one won: its statuses then say so).
    deadline = time.monotonic() + 30
    while len(responses) < CLIENTS - 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    gateway.release.set()
    for thread in threads:
        thread.join(timeout=60)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * (CLIENTS - 1)
    winner = next(response.json() for response in responses if response.status_code == 201)
    for response in responses:
        if response.status_code == 409:
            # Whether it lost at the unique constraints or read the winner's claim first: the
            # running turn's id beside the design's `detail`.
            assert response.json() == {
                **CONFLICT_BODY,
                "code": "turn_in_progress",
                "turn_id": winner["id"],
            }

    assert len(gateway.calls) == 1  # only the winner reached the provider
    assert Turn.objects.count() == 1
    assert Turn.objects.get().user_input == winner["user_input"]
    assert Message.objects.count() == 2
    assert LlmCallEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_stale_turn_taken_over_mid_call_keeps_its_bill_and_answers_409(
    live_server, owner, make_agent, make_session, monkeypatch, settings
):
    """Real connections: turn 1's worker is inside its LLM call when turn 2 declares it stale
    and takes the session; turn 1's commit then finds it interrupted."""
    gateway = FakeGateway()
    monkeypatch.setattr("sessions_app.turns.get_gateway", lambda: gateway)
    in_call, taken_over = threading.Event(), threading.Event()

    def hold_the_first_call(call):
        if not in_call.is_set():
            in_call.set()
            assert taken_over.wait(timeout=30)

    gateway.during_call = hold_the_first_call
    session = make_session(owner, agent=make_agent(owner, "ada"))
    token = Token.objects.create(user=owner).key
    url = f"{live_server.url}/api/v1/sessions/{session.id}/turns"
    headers = {"Authorization": f"Token {token}"}
    first: list[httpx.Response] = []

    def post_first():
        first.append(httpx.post(url, json={"message": "slow"}, headers=headers, timeout=60))

    worker = threading.Thread(target=post_first)
    worker.start()
    assert in_call.wait(timeout=30), first and (first[0].status_code, first[0].text[:500])
    long_ago = timezone.now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 1)
    Turn.objects.filter(turn_index=1).update(progress_at=long_ago)
    second = httpx.post(url, json={"message": "anyone?"}, headers=headers, timeout=60)
    taken_over.set()
    worker.join(timeout=60)

    assert second.status_code == 201
    assert second.json()["turn_index"] == 2
    assert first[0].status_code == 409
    assert first[0].json() == {**CONFLICT_BODY, "code": "turn_conflict"}
    stale = Turn.objects.get(turn_index=1)
    assert stale.status == "interrupted"
    assert list(stale.messages.values_list("role", flat=True)) == ["user"]
    assert LlmCallEvent.objects.filter(turn=stale).count() == 1
    assert stale.llm_calls == 1  # the bill is on the turn that ran up
    assert list(Message.objects.order_by("sequence").values_list("sequence", "role")) == [
        (1, "user"),
        (2, "user"),
        (3, "assistant"),
    ]
