"""Every call of a turn fits its own alias's window: the prompt it sends and the answer it asks
for (`max_tokens`, the alias's max_output_tokens), whatever the call is for.

The agents' context was kept to the budget, but three prompts were not: a later agent's, which
carries the answers given before it in the same turn; the summarizer's, which always took at
least one message of the transcript, however large; the manager's, which carries the user's
message whole. A real provider refuses such a call (context_length_exceeded) and the step fails.
These turns run through the real gateway to the offline demo provider; what reaches litellm is
recorded.
"""

import pytest

from orchestration.budget import estimate_tokens
from orchestration.litellm_loader import DEMO_PROVIDER, load_litellm
from orchestration.routing import ROUTING_PROMPT_HEAD
from orchestration.summary import SUMMARY_PROMPT_HEAD
from rooms.models import RoomMode
from sessions_app.models import Message, SessionSummary, Turn, TurnContextAudit
from usage.models import LlmCallEvent, ModelAlias
from usage.services import model_alias_set

pytestmark = pytest.mark.django_db

# About 1,200 tokens of an agent's answer (5 characters a word, 5/16 of a token a character).
LONG_ANSWER_WORDS = 770


@pytest.fixture
def talkative_agents(provider_requests, monkeypatch):
    """Agents that answer at length, as a real model may (up to its max_tokens): the demo
    provider's answer to an agent call, followed by about 1,200 tokens more."""
    litellm = load_litellm()
    forward = litellm.acompletion

    async def talkative(**request):
        response = await forward(**request)
        system = request["messages"][0]["content"]
        if not system.startswith((ROUTING_PROMPT_HEAD, SUMMARY_PROMPT_HEAD)):
            message = response.choices[0].message
            message.content += " " + "more " * LONG_ANSWER_WORDS
        return response

    monkeypatch.setattr(litellm, "acompletion", talkative)


def windows() -> dict[str, tuple[int, int]]:
    return {
        row.alias: (row.context_window, row.max_output_tokens) for row in ModelAlias.objects.all()
    }


def prompt_tokens(request: dict) -> int:
    return sum(estimate_tokens(message["content"]) for message in request["messages"])


def assert_each_fits_its_window(requests: list[dict]) -> None:
    """Each request's prompt with the answer it asks for fits its alias's window."""
    assert requests
    by_alias = windows()
    for request in requests:
        alias = request["model"].removeprefix(f"{DEMO_PROVIDER}/")
        window, max_output = by_alias[alias]
        assert request["max_tokens"] == max_output
        assert prompt_tokens(request) + request["max_tokens"] <= window, (
            alias,
            prompt_tokens(request),
            request["max_tokens"],
            window,
        )


def purposes(requests: list[dict]) -> list[str]:
    def purpose(request: dict) -> str:
        system = request["messages"][0]["content"]
        if system.startswith(ROUTING_PROMPT_HEAD):
            return "routing"
        if system.startswith(SUMMARY_PROMPT_HEAD):
            return "summary"
        return "agent"

    return [purpose(request) for request in requests]


# --- 1. the answers given before an agent in the same turn --------------------------------------


@pytest.fixture
def three_agents(owner, make_agent):
    """Ada, Bob and Cleo on deepseek, a 4,096-token window answering up to 1,536: 1,536 tokens
    of prompt. Each answer of about 1,250 tokens fits a prompt alone, two do not, and with two
    of them Cleo's prompt and her answer overran the window."""
    model_alias_set(alias="deepseek", context_window=4096, max_output_tokens=1536)
    return [make_agent(owner, key) for key in ("ada", "bob", "cleo")]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (RoomMode.ROUNDTABLE, "What should we ship first?"),
        (RoomMode.MANUAL, "@ada @bob @cleo what should we ship first?"),
        # The demo manager picks the agents whose key the message names.
        (RoomMode.ORCHESTRATOR, "ada, bob and cleo: what should we ship first?"),
    ],
)
def test_a_later_agent_reads_the_earlier_answers_that_fit_its_window(
    owner_client,
    owner,
    three_agents,
    make_room,
    make_session,
    post_turn,
    provider_requests,
    talkative_agents,
    mode,
    message,
):
    session = make_session(owner, room=make_room(owner, three_agents, mode=mode))

    response = post_turn(owner_client, session, message)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "completed"
    answers = [entry for entry in body["messages"] if entry["role"] == "assistant"]
    assert [(entry["agent_key"], entry["status"]) for entry in answers] == [
        ("ada", "ok"),
        ("bob", "ok"),
        ("cleo", "ok"),
    ]
    agent_requests = [request for request in provider_requests if purposes([request]) == ["agent"]]
    assert len(agent_requests) == 3
    assert_each_fits_its_window(provider_requests)

    # Bob read Ada's whole answer; Cleo, Bob's whole answer and the start of Ada's at most.
    bob_prompt = [entry["content"] for entry in agent_requests[1]["messages"]]
    assert f"[Ada @ada]: {answers[0]['content']}" in bob_prompt
    cleo_prompt = [entry["content"] for entry in agent_requests[2]["messages"]]
    assert f"[Bob @bob]: {answers[1]['content']}" in cleo_prompt
    assert f"[Ada @ada]: {answers[0]['content']}" not in cleo_prompt
    # The user's message, whole, right after the system prompt (no history on a first turn),
    # and the answers to it after it.
    assert cleo_prompt[1] == message
    assert cleo_prompt[-1] == f"[Bob @bob]: {answers[1]['content']}"
    assert [entry["role"] for entry in agent_requests[2]["messages"]][1:] == ["user"] * (
        len(cleo_prompt) - 1
    )

    ledger = LlmCallEvent.objects.filter(turn_id=body["id"]).order_by("created_at")
    expected = ["agent"] * 3 if mode != RoomMode.ORCHESTRATOR else ["routing"] + ["agent"] * 3
    assert [event.purpose for event in ledger] == expected
    assert {event.status for event in ledger} == {"success"}
    assert body["usage"]["llm_calls"] == len(expected)
    # The audit says the context was cut: what the fullest prompt would have been, and what
    # was sent.
    audit = TurnContextAudit.objects.get(turn_id=body["id"])
    assert audit.pruned is True
    assert audit.estimated_tokens_before > audit.input_budget == 1536
    assert audit.estimated_tokens_after <= audit.input_budget


# --- 2. the summary call ------------------------------------------------------------------------


def test_a_message_larger_than_the_summarizers_budget_is_summarized_cut_to_it(
    owner_client, owner, make_agent, make_room, make_session, post_turn, provider_requests, settings
):
    """Ada on deepseek (8,192 tokens answering up to 1,024: 6,144 of prompt); summaries by qwen
    (4,096 answering up to 1,024: 2,048 of prompt, pruned at 1,843). The first message, about
    4,400 tokens, fills 70 % of Ada's budget on the next turn: a summary is due, and it went to
    qwen whole (about 4,700 tokens with max_tokens 1,024 for a window of 4,096)."""
    model_alias_set(alias="deepseek", context_window=8192, max_output_tokens=1024)
    model_alias_set(alias="qwen", context_window=4096, max_output_tokens=1024)
    settings.PANTHEON_SUMMARIZER_MODEL_ALIAS = "qwen"
    session = make_session(owner, room=make_room(owner, [make_agent(owner, "ada")]))
    first = "@ada Kick-off. " + " ".join(["word"] * 2800)

    assert post_turn(owner_client, session, first).status_code == 201
    response = post_turn(owner_client, session, "@ada and now?")

    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "completed"
    assert purposes(provider_requests) == ["agent", "agent", "summary"]
    assert_each_fits_its_window(provider_requests)
    # The summarizer read the start of the message, cut to its budget.
    transcript = provider_requests[-1]["messages"][1]["content"]
    assert "[user]: @ada Kick-off. word word" in transcript
    assert prompt_tokens(provider_requests[-1]) <= 0.9 * 2048
    ledger = LlmCallEvent.objects.filter(turn__turn_index=2).order_by("created_at")
    assert [(event.purpose, event.status, event.model_alias) for event in ledger] == [
        ("agent", "success", "deepseek"),
        ("summary", "success", "qwen"),
    ]
    # The summary folds in the message it read, and nothing after it: Ada's first answer
    # goes into the next summary.
    summary = SessionSummary.objects.get()
    user_message = Message.objects.get(turn__turn_index=1, role="user")
    assert (summary.from_sequence, summary.to_sequence) == (user_message.sequence,) * 2
    assert summary.summary_text.startswith("1 message between the user.")
    assert TurnContextAudit.objects.get(turn__turn_index=2).summary_triggered is True


# --- 3. the routing call ------------------------------------------------------------------------


@pytest.fixture
def orchestrated_session(owner, make_agent, make_room, make_session, settings):
    """Ada and Bob on deepseek (64,000 tokens) in an orchestrator room managed by qwen."""
    settings.PANTHEON_MANAGER_MODEL_ALIAS = "qwen"
    room = make_room(
        owner, [make_agent(owner, "ada"), make_agent(owner, "bob")], mode=RoomMode.ORCHESTRATOR
    )
    return make_session(owner, room=room)


def test_the_manager_reads_the_start_of_a_message_larger_than_its_budget(
    owner_client, orchestrated_session, post_turn, provider_requests
):
    """qwen has 4,096 tokens answering up to 1,024: 2,048 of prompt. A message of about
    4,400 tokens fits the agents' budget, and went to the manager whole."""
    model_alias_set(alias="qwen", context_window=4096, max_output_tokens=1024)
    message = "bob, please plan this: " + " ".join(["word"] * 2800)

    response = post_turn(owner_client, orchestrated_session, message)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "completed"
    # The manager read who the message is for: it was not a fallback.
    assert body["routing"] == {
        "manager_model_alias": "qwen",
        "selected_agent_keys": ["bob"],
        "fallback_used": False,
        "fallback_reason": None,
        "ignored_agent_keys": [],
    }
    assert purposes(provider_requests) == ["routing", "agent"]
    assert_each_fits_its_window(provider_requests)
    assert provider_requests[0]["messages"][-1]["content"].startswith("bob, please plan this: word")
    # Bob read the message whole.
    assert provider_requests[1]["messages"][-1]["content"] == message
    ledger = LlmCallEvent.objects.filter(turn_id=body["id"]).order_by("created_at")
    assert [(event.purpose, event.status) for event in ledger] == [
        ("routing", "success"),
        ("agent", "success"),
    ]
    assert [entry["agent_key"] for entry in body["messages"]] == ["", "bob"]


def test_a_manager_whose_window_holds_no_prompt_is_not_asked_and_the_first_agent_answers(
    owner_client, orchestrated_session, post_turn, provider_requests
):
    """An alias saved before the window rule (2,500 tokens answering up to 2,000, and 1,024 of
    overhead: an input budget of 0) cannot route: the call is not sent, its ledger row says
    why, and the turn falls back to the first agent, as on any failed routing call. Before,
    the manager was asked anyway."""
    ModelAlias.objects.filter(alias="qwen").update(context_window=2500, max_output_tokens=2000)

    response = post_turn(owner_client, orchestrated_session, "bob, please plan this.")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "completed"
    assert body["routing"] == {
        "manager_model_alias": "qwen",
        "selected_agent_keys": ["ada"],
        "fallback_used": True,
        "fallback_reason": "manager_failed",  # its call was not sent: it could not fit
        "ignored_agent_keys": [],
    }
    assert purposes(provider_requests) == ["agent"]
    assert_each_fits_its_window(provider_requests)
    routing = LlmCallEvent.objects.get(turn_id=body["id"], purpose="routing")
    assert (routing.status, routing.error_type, routing.attempts) == (
        "error",
        "context_window_exceeded",
        0,
    )
    assert (routing.total_tokens, routing.credits) == (0, 0)
    assert Turn.objects.get().status == "completed"
