"""What most session tests start from: the owner's agent ada, seated in the room "Lab"."""

import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from orchestration.litellm_loader import load_litellm
from pantheon.testing.servers import forget_throttle_history
from pantheon.testing.stub_llm import StubLLM
from sessions_app.models import DIRECT_MODE, Message, Turn, TurnStatus
from sessions_app.selectors import session_for_turn
from sessions_app.turns import TurnListener, TurnOutcome, turn_run
from usage.models import ModelAlias


def direct_turn_in_flight(user, agent, session) -> Turn:
    """A direct turn of `agent` whose call is in flight, as its claim commits it: the turn and
    the user's message (no worker runs it)."""
    turn = Turn.objects.create(
        session=session,
        turn_index=1,
        mode=DIRECT_MODE,
        status=TurnStatus.RUNNING,
        user_input="hello?",
        roster=[
            {"agent_key": agent.agent_key, "name": agent.name, "model_alias": agent.model_alias}
        ],
        progress_at=timezone.now(),
    )
    Message.objects.create(session=session, turn=turn, sequence=1, role="user", content="hello?")
    return turn


@pytest.fixture
def ada(owner, make_agent):
    return make_agent(owner, "ada")


@pytest.fixture
def room(owner, ada, make_room):
    return make_room(owner, agents=[ada], name="Lab")


@pytest.fixture
def stale_turn(owner, ada, make_session, settings) -> Turn:
    """A running turn of a direct session with ada that made no progress for the stale limit:
    its worker is gone."""
    long_ago = timezone.now() - timedelta(seconds=settings.PANTHEON_TURN_STALE_SECONDS + 5)
    return Turn.objects.create(
        session=make_session(owner, agent=ada),
        turn_index=1,
        mode="direct",
        user_input="abandoned",
        created_at=long_ago,
        progress_at=long_ago,
    )


@pytest.fixture
def no_throttle_history():
    """For tests that start servers: the throttle rows their requests commit are not left to
    count against the tests after them (`forget_throttle_history`)."""
    yield
    forget_throttle_history()


def wait_for(condition, what: str = "the condition", timeout: float = 30) -> None:
    """Until `condition()` holds (a live server's work seen from the test), or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def point_at_stub(stub: StubLLM, model: str, *aliases: str) -> None:
    """Send these aliases' calls to the stub as `model` (`slow-<ms>`, `stream-<ms>`); the
    servers under test read the key from STUB_API_KEY."""
    ModelAlias.objects.filter(alias__in=aliases).update(
        litellm_model=f"openai/{model}", api_base=stub.base_url, api_key_env="STUB_API_KEY"
    )


def direct_turn(
    owner, session, gateway, *, message: str = "Hello there, friend", listen: bool = True
) -> tuple[TurnOutcome, list]:
    """A turn of `session` run by the turn service in this thread, as the API runs it: (its
    outcome, the events its listener heard; none without a listener, `listen=False`)."""
    heard: list = []
    outcome = async_to_sync(turn_run)(
        session=session_for_turn(user=owner, session_id=session.pk),
        user=owner,
        message=message,
        gateway=gateway,
        listener=TurnListener(send=heard.append) if listen else None,
    )
    return outcome, heard


def streamed_text(heard: list) -> str:
    """The answer's text as the listener heard it streamed (its `step_delta` events)."""
    return "".join(event.data["text"] for event in heard if event.name == "step_delta")


@pytest.fixture
def provider_requests(monkeypatch, settings) -> list[dict]:
    """What the gateway asks litellm for, on its way to the offline demo provider."""
    assert settings.PANTHEON_LLM_BACKEND == "demo"
    litellm = load_litellm()
    forward = litellm.acompletion
    asked: list[dict] = []

    async def recorded(**request):
        if "max_tokens" in request:  # not the gateway's warm-up
            asked.append(request)
        return await forward(**request)

    monkeypatch.setattr(litellm, "acompletion", recorded)
    return asked
