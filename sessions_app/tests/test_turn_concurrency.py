"""Ten clients race for one session against a live server on PostgreSQL: one turn wins."""

import threading

import httpx
import pytest
from rest_framework.authtoken.models import Token

from conftest import FakeGateway
from sessions_app.models import Message, Turn
from usage.models import LlmCallEvent

CONFLICT_BODY = {"detail": "Turn creation conflicted with concurrent writes. Please retry."}
CLIENTS = 10


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_posts_give_one_201_and_nine_exact_409s(
    live_server, owner, make_agent, make_session, monkeypatch
):
    gateway = FakeGateway(delay=0.5)  # slow enough that every loser arrives mid-turn
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
    for thread in threads:
        thread.join(timeout=60)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * (CLIENTS - 1)
    for response in responses:
        if response.status_code == 409:
            assert response.json() == CONFLICT_BODY
    winner = next(response.json() for response in responses if response.status_code == 201)

    assert len(gateway.calls) == 1  # only the winner reached the provider
    assert Turn.objects.count() == 1
    assert Turn.objects.get().user_input == winner["user_input"]
    assert Message.objects.count() == 2
    assert LlmCallEvent.objects.count() == 1
