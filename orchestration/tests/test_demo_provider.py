import asyncio
import json

import pytest

from orchestration.budget import ContextBudget
from orchestration.context import build_agent_messages
from orchestration.demo_provider import register_demo_provider
from orchestration.gateway import LiteLLMGateway
from orchestration.litellm_loader import DEMO_PROVIDER as PROVIDER
from orchestration.litellm_loader import load_litellm
from orchestration.routing import build_routing_messages, parse_routing
from orchestration.summary import build_summary_messages, parse_summary
from orchestration.tests.conftest import Sleeps, complete
from orchestration.types import ChatMessage, ConversationSummary, HistoryMessage, LlmCall


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def gateway(sleeps) -> LiteLLMGateway:
    return LiteLLMGateway(timeout_seconds=5, max_retries=2, demo=True, sleep=sleeps)


def agent_call(agent, roster, alias, user_input, same_turn=()):
    plan = build_agent_messages(
        agent=agent,
        roster=roster,
        room_goal="Ship v1",
        mode="roundtable",
        summary=None,
        history=[],
        same_turn=list(same_turn),
        user_input=user_input,
        budget=ContextBudget.for_window(8192, 1024),
    )
    return LlmCall(alias=alias, messages=plan.messages, purpose="agent", agent_key=agent.key)


def test_a_later_agent_answers_the_users_message_not_an_earlier_answer(
    gateway, ada, bob, roster, deepseek
):
    """This turn's earlier answers follow the user's message in a later agent's prompt: the
    demo answers the message, not the last of them."""
    first = complete(gateway, agent_call(ada, roster, deepseek, "Plan the launch"))
    earlier = HistoryMessage(
        role="assistant", content=first.text, agent_key="ada", agent_name="Ada"
    )
    later = complete(gateway, agent_call(bob, roster, deepseek, "Plan the launch", [earlier]))
    assert later.text.startswith("[Bob @bob] On “Plan the launch”: ")


def routing_call(roster, alias, user_input):
    messages = build_routing_messages(user_input=user_input, roster=roster)
    return LlmCall(alias=alias, messages=messages, purpose="routing")


def test_agent_reply_signs_as_the_agent_and_quotes_the_user(gateway, ada, roster, deepseek):
    result = complete(gateway, agent_call(ada, roster, deepseek, "Can you review my parser?"))
    assert result.ok
    assert result.text.startswith("[Ada @ada] On “Can you review my parser?”: ")
    assert result.attempts == 1
    assert result.provider == "pantheon_demo"
    assert result.provider_model == "pantheon_demo/deepseek"
    assert result.provider_cost_usd is None
    assert result.input_tokens_fresh > 0
    assert result.output_tokens > 0
    assert result.input_tokens_cached == 0
    assert result.error_kind is None


def test_agent_reply_is_deterministic(gateway, ada, bob, roster, deepseek):
    first = complete(gateway, agent_call(ada, roster, deepseek, "Plan the release"))
    second = complete(gateway, agent_call(ada, roster, deepseek, "Plan the release"))
    assert first.text == second.text
    assert (first.input_tokens_fresh, first.output_tokens) == (
        second.input_tokens_fresh,
        second.output_tokens,
    )
    other = complete(gateway, agent_call(bob, roster, deepseek, "Plan the release"))
    assert other.text.startswith("[Bob @bob] ")


def test_agent_reply_quotes_only_the_start_of_a_long_message(gateway, ada, roster, deepseek):
    long_input = "word " * 60
    result = complete(gateway, agent_call(ada, roster, deepseek, long_input))
    quote = result.text.split("“", 1)[1].split("”", 1)[0]
    assert len(quote) == 80
    assert quote.endswith("…")
    assert quote.startswith("word word")


def test_usage_grows_with_the_prompt(gateway, ada, roster, deepseek):
    short = complete(gateway, agent_call(ada, roster, deepseek, "hi"))
    long = complete(gateway, agent_call(ada, roster, deepseek, "hi " * 400))
    assert long.input_tokens_fresh > short.input_tokens_fresh + 200


def test_routing_picks_the_agent_whose_role_matches(gateway, roster, deepseek):
    result = complete(gateway, routing_call(roster, deepseek, "Can someone fix the database?"))
    decision = parse_routing(result.text, [a.key for a in roster])
    assert json.loads(result.text) == {"selected_agent_keys": ["bob"]}
    assert decision.selected_agent_keys == ("bob",)
    assert decision.fallback_used is False


def test_routing_picks_agents_by_name_or_key_in_roster_order(gateway, roster, deepseek):
    by_name = complete(gateway, routing_call(roster, deepseek, "Cleo, thoughts?"))
    assert parse_routing(by_name.text, ["ada", "bob", "cleo"]).selected_agent_keys == ("cleo",)
    by_key = complete(gateway, routing_call(roster, deepseek, "@cleo then @ada please"))
    assert parse_routing(by_key.text, ["ada", "bob", "cleo"]).selected_agent_keys == (
        "ada",
        "cleo",
    )


def test_routing_without_a_match_answers_the_first_agent(gateway, roster, deepseek):
    result = complete(gateway, routing_call(roster, deepseek, "hello there"))
    decision = parse_routing(result.text, ["ada", "bob", "cleo"])
    assert decision.selected_agent_keys == ("ada",)
    assert decision.fallback_used is False


def test_summary_answer_honours_the_contract(gateway, deepseek):
    transcript = [
        HistoryMessage(
            role="user",
            content="We run Postgres 16. Should we shard? We agreed to use UUIDs. "
            "Please write the migration.",
        ),
        HistoryMessage(
            role="assistant", content="Noted. I will draft it.", agent_key="ada", agent_name="Ada"
        ),
    ]
    messages = build_summary_messages(
        previous_summary=ConversationSummary("Kick-off done."), transcript=transcript
    )
    result = complete(gateway, LlmCall(alias=deepseek, messages=messages, purpose="summary"))
    extraction = parse_summary(result.text)
    assert extraction.valid_json is True
    assert extraction.summary.startswith("2 messages between the user, Ada @ada.")
    assert extraction.open_questions == ("Should we shard?",)
    assert extraction.decisions == ("We agreed to use UUIDs.", "I will draft it.")
    assert extraction.action_items == ("Please write the migration.",)
    assert extraction.key_facts == ("We run Postgres 16.", "Noted.")
    again = complete(gateway, LlmCall(alias=deepseek, messages=messages, purpose="summary"))
    assert again.text == result.text


def test_a_demo_summary_carries_the_previous_lists_forward(gateway, deepseek):
    """Its lists were the transcript's alone: the previous summary's were lost."""
    previous = ConversationSummary(
        "Kick-off done.",
        decisions=("We chose Postgres.",),
        open_questions=("Which region?",),
        action_items=("Please buy the server.",),
    )
    transcript = [
        HistoryMessage(role="user", content="We agreed on Frankfurt. Please book the rack."),
        HistoryMessage(
            role="assistant",
            content="[Ada @ada] On “We agreed on Frankfurt.”: I agree with the direction.",
            agent_key="ada",
            agent_name="Ada",
        ),
    ]
    messages = build_summary_messages(previous_summary=previous, transcript=transcript)

    result = complete(gateway, LlmCall(alias=deepseek, messages=messages, purpose="summary"))

    extraction = parse_summary(result.text)
    assert extraction.decisions == ("We chose Postgres.", "We agreed on Frankfurt.")
    assert extraction.open_questions == ("Which region?",)
    assert extraction.action_items == ("Please buy the server.", "Please book the rack.")
    assert extraction.key_facts == ()  # its own canned answer says nothing to remember


def run(gateway, call: LlmCall, streamed: bool):
    """The call as a plain completion, or streamed (litellm wraps errors raised while a
    stream is read in its MidStreamFallbackError)."""
    if streamed:
        return asyncio.run(gateway.stream(call, on_delta=lambda piece: None))
    return complete(gateway, call)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_fail_hook_exhausts_the_retries(gateway, sleeps, deepseek, streamed):
    call = LlmCall(
        alias=deepseek, messages=(ChatMessage("user", "boom [[demo:fail]]"),), purpose="agent"
    )
    result = run(gateway, call, streamed)
    assert result.status == "error"
    assert result.error_kind == "provider_error"
    assert result.attempts == 3
    assert sleeps == [0.5, 1.0]
    assert result.text == ""
    assert not result.ok


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_rate_limit_hook_reports_rate_limited(gateway, sleeps, deepseek, streamed):
    """Streamed, it was reported as a provider_error (the wrapper's kind, not the 429's)."""
    call = LlmCall(
        alias=deepseek, messages=(ChatMessage("user", "[[demo:rate_limit]]"),), purpose="agent"
    )
    result = run(gateway, call, streamed)
    assert (result.status, result.error_kind, result.attempts) == (
        "rate_limited",
        "rate_limited",
        3,
    )
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "streamed"])
def test_timeout_hook_is_not_retried(gateway, sleeps, deepseek, streamed):
    call = LlmCall(
        alias=deepseek, messages=(ChatMessage("user", "[[demo:timeout]]"),), purpose="agent"
    )
    result = run(gateway, call, streamed)
    assert (result.status, result.error_kind, result.attempts) == ("timeout", "timeout", 1)
    assert sleeps == []


def test_registration_is_idempotent():
    litellm = load_litellm()
    for _ in range(3):
        register_demo_provider()
        LiteLLMGateway(timeout_seconds=1, max_retries=0, demo=True)
    assert [item["provider"] for item in litellm.custom_provider_map].count(PROVIDER) == 1
    assert litellm._custom_providers.count(PROVIDER) == 1
    assert litellm.provider_list.count(PROVIDER) == 1
    assert litellm.get_llm_provider("pantheon_demo/deepseek")[1] == PROVIDER


def test_registration_survives_a_reset_map(monkeypatch, deepseek):
    litellm = load_litellm()
    gateway = LiteLLMGateway(timeout_seconds=1, max_retries=0, demo=True)
    monkeypatch.setattr(litellm, "custom_provider_map", [])
    result = complete(
        gateway, LlmCall(alias=deepseek, messages=(ChatMessage("user", "hi"),), purpose="agent")
    )
    assert result.ok


def test_async_completion_gives_the_same_answer():
    litellm = load_litellm()
    register_demo_provider()
    messages = [{"role": "user", "content": "same question"}]
    sync = litellm.completion(model="pantheon_demo/x", messages=messages)
    asynchronous = asyncio.run(litellm.acompletion(model="pantheon_demo/x", messages=messages))
    assert asynchronous.choices[0].message.content == sync.choices[0].message.content
    assert asynchronous.usage.prompt_tokens == sync.usage.prompt_tokens > 0
    assert sync.usage.total_tokens == sync.usage.prompt_tokens + sync.usage.completion_tokens
