import math

import pytest

from orchestration.budget import ContextBudget, estimate_tokens
from orchestration.context import (
    CUT_MARK,
    build_agent_messages,
    cut_to_fit,
    full_prompt_tokens_at_most,
    minimal_prompt_tokens,
    read_agent_identity,
)
from orchestration.gateway import (
    ANSWER_CHARS_PER_TOKEN,
    ANSWER_ESTIMATE_PER_TOKEN,
    answer_tokens_at_most,
)
from orchestration.types import AgentSpec, ConversationSummary, HistoryMessage


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


def test_a_direct_sessions_prompt_speaks_of_a_one_to_one_conversation(build, ada):
    """Not of a room, its goal (none) and its mode."""
    system = build(
        mode="direct", roster=[ada], room_goal="", summary=ConversationSummary("They met.")
    ).messages[0]
    assert system.content.splitlines()[0] == (
        "You are Ada (@ada), a Pantheon agent in a one-to-one conversation with the user."
    )
    assert read_agent_identity(system.content) == ("Ada", "ada")
    assert "room" not in system.content.lower()
    assert ada.role_prompt in system.content and "They met." in system.content


def test_a_lone_seat_of_a_roundtable_hears_nothing_of_other_agents(build, ada):
    system = build(roster=[ada]).messages[0].content
    assert "Room mode: roundtable. You hold the room's only seat: you answer every message." in (
        system.splitlines()
    )
    assert "agent" not in system.split("\n", 1)[1]


def test_latest_summary_goes_into_the_system_prompt(build):
    plan = build(summary=ConversationSummary("The team chose Postgres and UUID keys."))
    assert "The team chose Postgres and UUID keys." in plan.messages[0].content
    assert "Summary" not in build(summary=None).messages[0].content


def test_the_summarys_lists_follow_its_text_a_line_each(build):
    summary = ConversationSummary(
        "We chose Postgres.",
        key_facts=("Budget is 5k", "  "),
        decisions=("Use Postgres", "Keep UUID\nkeys"),
        action_items=("Alice buys server",),
    )

    system = build(summary=summary).messages[0].content

    assert system.endswith(
        "\n\nSummary of the conversation so far:\n"
        "We chose Postgres.\n"
        "Key facts: Budget is 5k\n"
        "Decisions: Use Postgres; Keep UUID keys\n"
        "Action items: Alice buys server"
    )


def test_a_summary_too_long_for_the_budget_loses_its_lists_first(build):
    """The summary is cut from its end: its lists go before its text."""
    base = build().estimated_tokens
    text = "The team chose Postgres. " * 20  # about 160 tokens
    summary = ConversationSummary(text, decisions=tuple(f"Decision {n}" for n in range(60)))
    whole = build(summary=summary).estimated_tokens

    plan = build(summary=summary, budget=budget_of(base + 200))

    system = plan.messages[0].content
    assert whole > base + 200 >= plan.estimated_tokens
    assert text.strip() in system and "Decisions: Decision 0; Decision 1" in system
    assert "Decision 59" not in system and system.endswith(CUT_MARK)
    assert plan.summary_cut is True


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
    # The question before the answers this turn already gave it, which go as user messages:
    # the prompt ends on a user's message, as providers expect of the one they answer.
    assert [(m.role, m.content) for m in plan.messages[1:]] == [
        ("user", "Kick-off"),
        ("assistant", "My earlier point"),
        ("assistant", "[Bob @bob]: Schemas first"),
        ("user", "What should we do next?"),
        ("user", "[Cleo @cleo]: Copy is ready"),
    ]
    assert plan.history_pruned == 0
    assert plan.pruned is False
    assert plan.estimated_tokens == plan.estimated_tokens_full


def test_a_later_agent_with_no_history_reads_the_question_first(build):
    """A roundtable's first turn (or a history pruned away): the first message after the
    system prompt is still a user's, the question, and the answers to it follow."""
    plan = build(same_turn=[answer("bob", "Schemas first"), answer("cleo", "Copy is ready")])
    assert [(m.role, m.content) for m in plan.messages[1:]] == [
        ("user", "What should we do next?"),
        ("user", "[Bob @bob]: Schemas first"),
        ("user", "[Cleo @cleo]: Copy is ready"),
    ]


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
    assert plan.history_tokens_full == 1000  # all of it, pruned or not: what a summary folds
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


def message(role: str, content: str) -> HistoryMessage:
    """A history message of 100 tokens; an answer is Ada's own (not attributed)."""
    key = "ada" if role == "assistant" else None
    return HistoryMessage(role=role, content=content, agent_key=key, token_estimate=100)


def test_pruning_leaves_out_whole_exchanges(build):
    """A question goes with the answers after it: the history kept starts with a question."""
    base = build().estimated_tokens

    history = [
        message("user", "q1"),
        message("assistant", "a1"),
        message("user", "q2"),
        message("assistant", "a2"),
        message("assistant", "a2 again"),
        message("user", "q3"),
        message("assistant", "a3"),
    ]
    # 450 tokens of history fit under the prune line: the last exchange (200), not the one
    # before it (300 more).
    plan = build(history=history, budget=budget_of(math.ceil((base + 450) / 0.9)))

    assert [(m.role, m.content) for m in plan.messages[1:-1]] == [
        ("user", "q3"),
        ("assistant", "a3"),
    ]
    assert (plan.history_pruned, plan.pruned) == (5, True)
    assert plan.estimated_tokens == base + 200
    assert plan.estimated_tokens_full == base + 700


def test_answers_whose_question_is_not_in_the_history_are_left_out(build):
    """The summary folded in their question, or the read began in the middle of an exchange."""
    history = [
        HistoryMessage(role="assistant", content="Late answer", agent_key="ada"),
        HistoryMessage(role="assistant", content="Another", agent_key="bob", agent_name="Bob"),
        HistoryMessage(role="user", content="Next question"),
        HistoryMessage(role="assistant", content="Its answer", agent_key="ada"),
    ]
    plan = build(history=history)
    assert [(m.role, m.content) for m in plan.messages[1:]] == [
        ("user", "Next question"),
        ("assistant", "Its answer"),
        ("user", "What should we do next?"),
    ]
    assert (plan.history_pruned, plan.pruned) == (2, True)
    assert plan.estimated_tokens_full > plan.estimated_tokens
    only_answers = build(history=history[:2])
    assert [m.role for m in only_answers.messages] == ["system", "user"]
    assert only_answers.history_pruned == 2


def answer(key: str, content: str) -> HistoryMessage:
    return HistoryMessage(role="assistant", content=content, agent_key=key, agent_name=key.title())


def test_earlier_answers_of_the_turn_outlast_the_history_within_the_budget(build):
    """Past the prune line, the history goes first; the answers stay while the budget holds
    them."""
    base = build().estimated_tokens
    same_turn = [answer("bob", "b" * 320)]  # 100 tokens, and 4 for "[Bob @bob]: "
    history = [HistoryMessage(role="user", content="older question", token_estimate=5)]

    plan = build(history=history, same_turn=same_turn, budget=budget_of(base + 105))

    assert plan.history_pruned == 1
    assert plan.messages[-1].content == "[Bob @bob]: " + "b" * 320
    assert (plan.same_turn_dropped, plan.same_turn_cut, plan.pruned) == (0, 0, True)
    assert plan.estimated_tokens == base + 104


def test_past_the_budget_the_earliest_answers_of_the_turn_are_cut_then_left_out(build, roster):
    dan = AgentSpec(key="dan", name="Dan", role_prompt="", model_alias="qwen")
    seated = [*roster, dan]  # this turn's answers are seated agents'
    base = build(roster=seated).estimated_tokens
    same_turn = [
        answer("bob", "b" * 3200),  # 1,000 tokens (and the attribution)
        answer("cleo", "c" * 3200),
        answer("dan", "d" * 320),  # 100
    ]

    # Room for Dan's answer and about half of Cleo's: Bob's is left out, Cleo's cut.
    plan = build(roster=seated, same_turn=same_turn, budget=budget_of(base + 600))

    assert plan.messages[1].content == "What should we do next?"
    contents = [message.content for message in plan.messages[2:]]
    assert len(contents) == 2
    assert contents[0].startswith("[Cleo @cleo]: ccc") and contents[0].endswith(CUT_MARK)
    assert contents[1] == "[Dan @dan]: " + "d" * 320
    assert (plan.same_turn_dropped, plan.same_turn_cut, plan.pruned) == (1, 1, True)
    assert base + 590 < plan.estimated_tokens <= base + 600
    assert plan.estimated_tokens == sum(
        estimate_tokens(message.content) for message in plan.messages
    )
    assert plan.estimated_tokens_full > base + 2100


def test_an_answer_whose_cut_would_say_nothing_is_left_out(build):
    base = build().estimated_tokens
    same_turn = [answer("bob", "b" * 320), answer("cleo", "c" * 320)]  # 104 tokens each

    plan = build(same_turn=same_turn, budget=budget_of(base + 104 + 20))

    assert [message.content[:7] for message in plan.messages[2:]] == ["[Cleo @"]
    assert (plan.same_turn_dropped, plan.same_turn_cut) == (1, 0)


def test_the_summary_is_cut_last_and_the_users_input_never(build):
    base = build().estimated_tokens
    summary = ConversationSummary("The team chose Postgres. " * 200)  # about 1,560 tokens

    plan = build(
        summary=summary, same_turn=[answer("bob", "b" * 320)], budget=budget_of(base + 400)
    )

    system = plan.messages[0].content
    assert "Summary of the conversation so far:\nThe team chose Postgres." in system
    assert system.endswith(CUT_MARK)
    assert plan.messages[-2].content == "What should we do next?"
    assert plan.messages[-1].content == "[Bob @bob]: " + "b" * 320
    assert plan.summary_cut is True and plan.pruned is True
    assert plan.estimated_tokens <= base + 400


def test_a_prompt_whose_instructions_and_input_do_not_fit_keeps_only_them(build):
    """What the up-front check refuses: nothing else is left in, and the plan says it is over
    the budget (such a prompt is not sent)."""
    plan = build(
        summary=ConversationSummary("A summary."),
        history=[HistoryMessage(role="user", content="older question")],
        same_turn=[answer("bob", "b" * 320)],
        user_input="y" * 4000,
        budget=budget_of(50),
    )
    assert [message.role for message in plan.messages] == ["system", "user"]
    assert "Summary" not in plan.messages[0].content
    assert plan.messages[-1].content == "y" * 4000
    assert plan.estimated_tokens > 50
    assert (plan.history_pruned, plan.same_turn_dropped, plan.summary_cut) == (1, 1, True)


def test_cut_to_fit_keeps_the_longest_beginning_that_fits():
    def under(limit):
        return lambda text: estimate_tokens(text) <= limit

    assert cut_to_fit("short", under(10)) == "short"
    cut = cut_to_fit("word " * 100, under(40))
    assert cut is not None and cut.startswith("word word") and cut.endswith(CUT_MARK)
    assert estimate_tokens(cut) <= 40 < estimate_tokens(cut[: -len(CUT_MARK)] + " word" + CUT_MARK)
    assert cut_to_fit("word " * 100, under(3)) is None


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


def said(content: str, key: str | None = None) -> HistoryMessage:
    """A stored message, with the estimate the turn stores with it."""
    role = "assistant" if key else "user"
    name = key.title() if key else None
    return HistoryMessage(
        role=role,
        content=content,
        agent_key=key,
        agent_name=name,
        token_estimate=estimate_tokens(content),
    )


def test_the_whole_prompt_is_bounded_before_the_turn_answers(build, ada, roster):
    """A capped turn holds a summary only when one may be due, which the whole prompt decides
    before the agents have answered: the bound counts every earlier answer at the most the
    gateway lets through (16 characters, and 10 estimated tokens, a token asked for),
    attributions included. 320 Chinese characters reach the estimate's limit (1,024 ASCII
    ones came to 320 tokens, half the bound)."""
    summary = ConversationSummary(
        "They agreed on the schema. " * 40,
        key_facts=("Budget is 5k",),
        decisions=("Use Postgres", "UUID keys"),
        action_items=("Alice buys a server",),
    )
    history = [said("u" * 333), said("a" * 501, "ada"), said("g" * 77, "grace"), said("l", "bob")]
    max_output = 64
    longest = "中" * (max_output * ANSWER_ESTIMATE_PER_TOKEN // 2)
    assert len(longest) < max_output * ANSWER_CHARS_PER_TOKEN
    answers = [said(longest, "bob"), said(longest, "cleo")]  # in this turn, before ada
    largest = [
        HistoryMessage(
            role="assistant",
            content="",
            agent_key=key,
            agent_name=key.title(),
            token_estimate=answer_tokens_at_most(max_output),
        )
        for key in ("bob", "cleo")
    ]
    floor = minimal_prompt_tokens(
        agent=ada,
        roster=roster,
        room_goal="Ship the v1 API",
        mode="roundtable",
        user_input="What should we do next?",
    )

    full = build(summary=summary, history=history, same_turn=answers).estimated_tokens_full
    bound = full_prompt_tokens_at_most(
        agent=ada,
        roster=roster,
        floor=floor,
        summary=summary,
        history=history,
        same_turn=largest,
    )

    assert full <= bound <= full + 1  # the summary's part rounded up on its own
    assert answer_tokens_at_most(max_output) == estimate_tokens(longest) == 640
    bare = full_prompt_tokens_at_most(
        agent=ada, roster=roster, floor=floor, summary=None, history=[], same_turn=[]
    )
    assert bare == floor == build().estimated_tokens_full


def test_when_not_even_the_newest_exchange_fits_its_question_stays_with_its_newest_answers(
    build,
):
    """A roundtable of many seats: the newest exchange alone is over the prune line. Whole
    exchanges only, nothing was left; the question and the answers that fit beside it are."""
    base = build().estimated_tokens

    history = [
        message("user", "q1"),
        message("assistant", "a1"),
        message("user", "q2"),
        *(message("assistant", f"answer {n}") for n in range(1, 6)),
    ]
    # 350 tokens of history under the prune line: the question and the two newest answers.
    plan = build(history=history, budget=budget_of(math.ceil((base + 350) / 0.9)))

    kept = plan.messages[1:-1]
    assert [m.role for m in kept] == ["user", "assistant", "assistant"]
    assert kept[0].content == "q2"
    assert [m.content.rsplit(" ", 1)[-1] for m in kept[1:]] == ["4", "5"]
    assert (plan.history_pruned, plan.pruned) == (5, True)
    assert plan.estimated_tokens == base + 300
