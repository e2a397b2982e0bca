import pytest

from orchestration.budget import ContextBudget, estimate_tokens
from orchestration.context import (
    build_agent_messages,
    minimal_prompt_tokens,
    read_agent_identity,
)
from orchestration.types import AgentSpec, HistoryMessage


def budget_of(input_budget: int) -> ContextBudget:
    return ContextBudget(
        context_window=input_budget, output_reserve=0, overhead_reserve=0, input_budget=input_budget
    )


@pytest.fixture
def build(ada, roster):
    def run(**overrides):
        arguments = dict(
            agent=ada,
            roster=roster,
            room_goal="Ship the v1 API",
            mode="roundtable",
            summary=None,
            history=[],
            same_turn=[],
            user_input="What should we do next?",
            budget=budget_of(100_000),
        )
        arguments.update(overrides)
        return build_agent_messages(**arguments)

    return run


def test_system_prompt_names_the_agent_its_role_goal_mode_and_other_agents(build, ada):
    system = build().messages[0]
    assert system.role == "system"
    assert system.content.splitlines()[0] == "You are Ada (@ada), an agent in a Pantheon room."
    assert read_agent_identity(system.content) == ("Ada", "ada")
    assert ada.role_prompt in system.content
    assert "Ship the v1 API" in system.content
    assert "roundtable" in system.content
    assert "Bob (@bob)" in system.content and "Cleo (@cleo)" in system.content
    assert "marketing copy" in system.content
    assert "(@ada):" not in system.content.split("Other agents", 1)[1]


def test_latest_summary_goes_into_the_system_prompt(build):
    plan = build(summary="The team chose Postgres and UUID keys.")
    assert "The team chose Postgres and UUID keys." in plan.messages[0].content
    assert "Summary" not in build(summary=None).messages[0].content


def test_read_agent_identity_rejects_other_prompts():
    assert read_agent_identity("You are a helpful assistant.") is None


def test_message_order_and_attribution(build):
    history = [
        HistoryMessage(role="user", content="Kick-off"),
        HistoryMessage(
            role="assistant", content="My earlier point", agent_key="ada", agent_name="Ada"
        ),
        HistoryMessage(
            role="assistant", content="Schemas first", agent_key="bob", agent_name="Bob"
        ),
    ]
    same_turn = [
        HistoryMessage(
            role="assistant", content="Copy is ready", agent_key="cleo", agent_name="Cleo"
        )
    ]
    plan = build(history=history, same_turn=same_turn)
    assert [(m.role, m.content) for m in plan.messages[1:]] == [
        ("user", "Kick-off"),
        ("assistant", "My earlier point"),
        ("assistant", "[Bob @bob]: Schemas first"),
        ("assistant", "[Cleo @cleo]: Copy is ready"),
        ("user", "What should we do next?"),
    ]
    assert plan.history_pruned == 0
    assert plan.pruned is False
    assert plan.estimated_tokens == plan.estimated_tokens_full


def test_pruning_drops_the_oldest_history_first(build):
    base = build().estimated_tokens
    history = [HistoryMessage(role="user", content=f"m{i}", token_estimate=100) for i in range(10)]
    # Limit is 90 % of 1000 = 900 tokens for the whole prompt.
    expected_kept = (900 - base) // 100
    assert 0 < expected_kept < 10

    plan = build(history=history, budget=budget_of(1000))

    kept = [m.content for m in plan.messages[1:-1]]
    assert kept == [f"m{i}" for i in range(10 - expected_kept, 10)]
    assert plan.history_pruned == 10 - expected_kept
    assert plan.pruned is True
    assert plan.estimated_tokens_full == base + 1000
    assert plan.estimated_tokens == base + 100 * expected_kept
    assert plan.estimated_tokens <= 900
    assert plan.messages[-1].content == "What should we do next?"


def test_pruning_keeps_a_contiguous_newest_stretch(build):
    base = build().estimated_tokens
    history = [
        HistoryMessage(role="user", content="old small", token_estimate=1),
        HistoryMessage(role="user", content="huge", token_estimate=10_000),
        HistoryMessage(role="user", content="new small", token_estimate=1),
    ]
    plan = build(history=history, budget=budget_of(base + 100))
    assert [m.content for m in plan.messages[1:-1]] == ["new small"]
    assert plan.history_pruned == 2


def test_user_input_and_same_turn_survive_even_over_budget(build):
    same_turn = [
        HistoryMessage(role="assistant", content="x" * 4000, agent_key="bob", agent_name="Bob")
    ]
    history = [HistoryMessage(role="user", content="older question")]
    plan = build(history=history, same_turn=same_turn, user_input="y" * 4000, budget=budget_of(50))
    assert plan.messages[-1].content == "y" * 4000
    assert plan.messages[-2].content.startswith("[Bob @bob]: ")
    assert plan.history_pruned == 1
    assert plan.estimated_tokens > 50


def test_token_estimates_are_computed_when_not_given(build):
    base = build().estimated_tokens
    plan = build(history=[HistoryMessage(role="user", content="z" * 400)])
    assert plan.estimated_tokens == base + estimate_tokens("z" * 400)


def test_precomputed_estimates_are_trusted(build):
    base = build().estimated_tokens
    plan = build(history=[HistoryMessage(role="user", content="short", token_estimate=777)])
    assert plan.estimated_tokens == base + 777


def test_minimal_prompt_counts_the_system_prompt_and_the_input(build, ada, roster):
    bare = minimal_prompt_tokens(
        agent=ada, roster=roster, room_goal="", mode="manual", user_input="x" * 160
    )
    # Without history or summary, the minimal prompt is exactly what the agent would be sent.
    assert bare == build(user_input="x" * 160, room_goal="", mode="manual").estimated_tokens
    long_role = AgentSpec(key="ada", name="Ada", role_prompt="r" * 40_000, model_alias="deepseek")
    heavy = minimal_prompt_tokens(
        agent=long_role, roster=roster, room_goal="", mode="manual", user_input="x" * 160
    )
    assert heavy >= bare + estimate_tokens("r" * 40_000) - estimate_tokens(ada.role_prompt)
