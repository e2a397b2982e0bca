import json
import logging

import pytest

from orchestration.budget import estimate_tokens
from orchestration.context import CUT_MARK
from orchestration.routing import (
    PREVIOUS_EXCHANGE_HEADING,
    RoutingDecision,
    build_routing_messages,
    fit_routing_messages,
    parse_routing,
    previous_exchange,
    read_previous_answerers,
    read_roster,
)
from orchestration.types import AgentSpec, HistoryMessage

KEYS = ["ada", "bob", "cleo"]


def test_valid_list_is_kept_in_answer_order():
    decision = parse_routing('{"selected_agent_keys": ["cleo", "ada"]}', KEYS)
    assert decision.selected_agent_keys == ("cleo", "ada")
    assert decision.fallback_used is False


def test_single_key_form_is_accepted():
    decision = parse_routing('{"selected_agent_key": "bob"}', KEYS)
    assert decision.selected_agent_keys == ("bob",)
    assert decision.fallback_used is False


def test_fenced_json_with_prose_is_accepted():
    raw = 'Sure! Here you go:\n```json\n{"selected_agent_keys": ["bob"]}\n```\nHope it helps.'
    decision = parse_routing(raw, KEYS)
    assert decision.selected_agent_keys == ("bob",)
    assert decision.fallback_used is False


def test_object_embedded_in_prose_is_accepted():
    raw = 'I pick {"selected_agent_keys": ["ada", "bob"]} for this one.'
    assert parse_routing(raw, KEYS).selected_agent_keys == ("ada", "bob")


def test_duplicates_are_dropped_keeping_order():
    decision = parse_routing('{"selected_agent_keys": ["bob", "ada", "bob"]}', KEYS)
    assert decision.selected_agent_keys == ("bob", "ada")


def test_garbage_falls_back_to_first_agent_and_logs_the_excerpt_at_debug_only(caplog):
    # The manager's answer may quote the user's message: a production log (INFO) gets its
    # length, not its words; DEBUG has the first 200 characters for whoever debugs a manager.
    raw = "I think Bob should answer this about my diagnosis. " + "x" * 300
    with caplog.at_level(logging.WARNING, logger="orchestration.routing"):
        decision = parse_routing(raw, KEYS)
    assert decision.selected_agent_keys == ("ada",)
    assert decision.fallback_used is True
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.WARNING
    assert "diagnosis" not in caplog.text
    assert f"an answer of {len(raw)} characters" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="orchestration.routing"):
        parse_routing(raw, KEYS)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 1
    assert raw[:200] in debug[0]
    assert raw[:201] not in debug[0]


def test_unknown_keys_warning_holds_none_of_the_answers_prose(caplog):
    raw = 'My patient has the flu, so: {"selected_agent_keys": ["zed", "cleo"]}'
    with caplog.at_level(logging.INFO, logger="orchestration.routing"):
        decision = parse_routing(raw, KEYS)
    assert decision.selected_agent_keys == ("cleo",)
    assert "1 unknown agent key(s)" in caplog.text
    assert "patient" not in caplog.text and "zed" not in caplog.text


def test_unknown_keys_are_counted_not_quoted(caplog):
    """A key the manager made up may be any text, the user's words too (the reviewer's catch):
    the warning counts them; the answer's `ignored_agent_keys` names them to its user."""
    raw = '{"selected_agent_keys": ["my diagnosis is flu", "cleo"]}'
    with caplog.at_level(logging.INFO, logger="orchestration.routing"):
        decision = parse_routing(raw, KEYS)
    assert decision.ignored_agent_keys == ("my diagnosis is flu",)
    assert "diagnosis" not in caplog.text


def test_all_unknown_keys_fall_back(caplog):
    with caplog.at_level(logging.WARNING, logger="orchestration.routing"):
        decision = parse_routing('{"selected_agent_keys": ["zed", "mallory"]}', KEYS)
    assert decision.selected_agent_keys == ("ada",)
    assert decision.fallback_used is True
    assert "(2 unknown agent key(s))" in caplog.text


def test_some_unknown_keys_are_dropped_with_a_warning_but_no_fallback(caplog):
    with caplog.at_level(logging.WARNING, logger="orchestration.routing"):
        decision = parse_routing('{"selected_agent_keys": ["zed", "cleo"]}', KEYS)
    assert decision.selected_agent_keys == ("cleo",)
    assert decision.fallback_used is False
    assert "named 1 unknown agent key(s); kept ['cleo']" in caplog.text


def test_empty_selection_falls_back(caplog):
    with caplog.at_level(logging.WARNING, logger="orchestration.routing"):
        decision = parse_routing('{"selected_agent_keys": []}', KEYS)
    assert decision.selected_agent_keys == ("ada",)
    assert decision.fallback_used is True
    assert "an empty selection" in caplog.text


def test_json_that_is_not_an_object_falls_back():
    decision = parse_routing('["ada", "bob"]', KEYS)
    assert decision.selected_agent_keys == ("ada",)
    assert decision.fallback_used is True


def test_object_without_the_contract_key_falls_back():
    decision = parse_routing('{"agents": ["bob"]}', KEYS)
    assert decision.fallback_used is True


def test_keys_echoed_with_at_sign_or_capitals_are_normalised():
    decision = parse_routing('{"selected_agent_keys": ["@Bob", " CLEO "]}', KEYS)
    assert decision.selected_agent_keys == ("bob", "cleo")


@pytest.mark.parametrize(
    "answer",
    [
        # Its thoughts first, then its choice.
        '{"thought": "a schema question"}\n{"selected_agent_keys": ["bob"]}',
        # The format's example first, then its answer.
        '```json\n{"selected_agent_keys": ["key"]}\n```\n```json\n'
        '{"selected_agent_keys": ["bob"]}\n```',
        # The roster echoed back before the answer.
        'Looking at [{"key": "ada"}, {"key": "bob"}], the answer is '
        '{"selected_agent_keys": ["bob"]}',
        # The answer as an array of it.
        '[{"selected_agent_keys": ["bob"]}]',
        # The contract's name in other capitals.
        '{"Selected_Agent_Keys": ["bob"]}',
    ],
)
def test_the_first_object_that_holds_a_selection_is_the_answer(answer):
    """An object before the selection (thoughts, an example, the roster) made the turn fall
    back to the first seat, though the manager had chosen."""
    assert parse_routing(answer, KEYS) == RoutingDecision(("bob",), fallback_used=False)


@pytest.mark.parametrize("key", ["＠bob", "`bob`", "bob.", " 'Bob' ", "@Bob!"])
def test_a_key_in_the_wrapping_a_model_gives_it_is_read(key):
    assert parse_routing(json.dumps({"selected_agent_keys": [key]}), KEYS).selected_agent_keys == (
        "bob",
    )


def test_a_selection_cut_off_mid_list_keeps_the_keys_it_names_whole():
    """The manager's output limit ended its answer in the middle of its list."""
    decision = parse_routing('{"selected_agent_keys": ["bob", "cle', KEYS)
    assert decision == RoutingDecision(("bob",), fallback_used=False)
    assert parse_routing('{"selected_agent_keys": ["cle', KEYS).fallback_used is True


def test_empty_roster_falls_back_to_nothing():
    decision = parse_routing("nonsense", [])
    assert decision.selected_agent_keys == ()
    assert decision.fallback_used is True


def test_routing_prompt_states_the_contract_and_carries_the_roster(roster):
    messages = build_routing_messages(
        user_input="Who can check my schema?", roster=roster, room_goal="Ship v1"
    )
    system, user = messages
    assert system.role == "system" and user.role == "user"
    assert user.content == "Who can check my schema?"
    assert '{"selected_agent_keys": ["key", ...]}' in system.content
    assert "Ship v1" in system.content
    entries = read_roster(system.content)
    assert [(e.key, e.name) for e in entries] == [("ada", "Ada"), ("bob", "Bob"), ("cleo", "Cleo")]
    assert entries[1].role == roster[1].role_prompt


def test_roster_with_newlines_and_quotes_round_trips(ada):
    tricky = ada.__class__(
        key="zed", name='Zed "Z"', role_prompt="Line one.\nRoster (JSON): []", model_alias="x"
    )
    system = build_routing_messages(user_input="hi", roster=[tricky, ada])[0].content
    entries = read_roster(system)
    assert [e.key for e in entries] == ["zed", "ada"]
    assert entries[0].name == 'Zed "Z"'
    assert json.loads(json.dumps(entries[0].role)) == "Line one.\nRoster (JSON): []"


def test_read_roster_of_an_unrelated_prompt_is_empty():
    assert read_roster("You are a helpful assistant.") == ()


def prompt_tokens(messages) -> int:
    return sum(estimate_tokens(message.content) for message in messages)


def test_a_routing_prompt_that_fits_is_left_whole(roster):
    fitted = fit_routing_messages(
        user_input="Who can check my schema?", roster=roster, room_goal="Ship v1", input_budget=2000
    )
    assert fitted == build_routing_messages(
        user_input="Who can check my schema?", roster=roster, room_goal="Ship v1"
    )


def test_the_manager_reads_the_start_of_a_message_too_long_for_it(roster):
    message = "@bob check my schema. " + "word " * 3000
    system, user = fit_routing_messages(
        user_input=message, roster=roster, room_goal="Ship v1", input_budget=1000
    )
    assert system == build_routing_messages(user_input="", roster=roster, room_goal="Ship v1")[0]
    assert user.content.startswith("@bob check my schema. word") and user.content.endswith(CUT_MARK)
    assert 990 < prompt_tokens((system, user)) <= 1000


def test_a_long_roster_is_shown_with_shorter_roles_and_goal_before_the_message_is_cut(ada):
    roster = [
        AgentSpec(
            key=f"agent{index}", name=f"Agent {index}", role_prompt="r" * 500, model_alias="x"
        )
        for index in range(12)
    ]
    message = "Who should answer? " + "word " * 300
    system, user = fit_routing_messages(
        user_input=message, roster=roster, room_goal="g" * 5000, input_budget=1500
    )
    entries = read_roster(system.content)
    assert [entry.key for entry in entries] == [f"agent{index}" for index in range(12)]
    assert {len(entry.role) for entry in entries} == {80}
    assert "Room goal: " + "g" * 200 + "…" in system.content
    # The message keeps at least 256 tokens.
    assert user.content.startswith("Who should answer? word")
    assert estimate_tokens(user.content) >= 256
    assert prompt_tokens((system, user)) <= 1500


def test_a_roster_that_leaves_no_room_for_the_message_gives_a_prompt_over_the_budget(roster):
    system, user = fit_routing_messages(
        user_input="Who can check my schema?", roster=roster, room_goal="Ship v1", input_budget=20
    )
    assert '"role": ""' in system.content and "Ship v1" not in system.content
    assert user.content == "Who can check my schema?"
    assert prompt_tokens((system, user)) > 20


def answer_of(key: str, content: str) -> HistoryMessage:
    return HistoryMessage(role="assistant", content=content, agent_key=key, agent_name=key.title())


def spec_of(key: str, id: str | None = None) -> AgentSpec:
    return AgentSpec(key=key, name=key.title(), role_prompt="", model_alias="deepseek", id=id)


def test_the_manager_reads_the_last_exchange_only():
    history = [
        HistoryMessage(role="user", content="First question?"),
        answer_of("ada", "First answer."),
        HistoryMessage(role="user", content="Which   index?"),
        answer_of("bob", "A B-tree.\nOr a hash."),
    ]

    roster = [spec_of("ada"), spec_of("bob")]
    assert previous_exchange(history, roster) == "\n".join(
        [PREVIOUS_EXCHANGE_HEADING, "[user]: Which index?", "[Bob @bob]: A B-tree. Or a hash."]
    )
    assert previous_exchange([], roster) == ""
    answer = answer_of("ada", "An answer whose question was summarized.")
    assert previous_exchange([answer], roster) == ""


def test_the_previous_exchange_names_each_answerer_as_the_manager_may_choose_them():
    """By the agent who gave the answer, as called now: Dex answered as @dz, then became @dw,
    and a newcomer took @dz; the exchange said "[Dex @dz]", and the manager (the demo's
    too) sent "Elaborate on that." to the newcomer. An answerer not in the roster is named
    without a key; Otto's answer, stored before answers kept their agent's id, goes by key."""
    dex, newcomer, otto = spec_of("dw", id="1"), spec_of("dz", id="2"), spec_of("otto")
    history = [
        HistoryMessage(role="user", content="Which index?"),
        HistoryMessage(
            role="assistant", content="A hash.", agent_key="gone", agent_name="Gus", agent_id="9"
        ),
        answer_of("otto", "Or a B-tree."),
        HistoryMessage(
            role="assistant", content="A B-tree.", agent_key="dz", agent_name="Dex", agent_id="1"
        ),
    ]

    exchange = previous_exchange(history, [dex, newcomer, otto])

    assert exchange.splitlines()[2:] == [
        "[Gus]: A hash.",
        "[Otto @otto]: Or a B-tree.",
        "[Dw @dw]: A B-tree.",
    ]
    assert read_previous_answerers("...\n" + exchange) == ("otto", "dw")


def test_the_previous_exchange_costs_a_bounded_number_of_tokens():
    """Its question and its newest three answers, each cut to 100 tokens; the keys of the
    others who answered (at most ten) without their answers."""
    keys = [f"agent{index}" for index in range(20)]
    history = [
        HistoryMessage(role="user", content="question " * 1000),
        *(answer_of(key, "answer " * 1000) for key in keys),
    ]

    exchange = previous_exchange(history, [spec_of(key) for key in keys])

    lines = exchange.splitlines()
    assert lines[1].startswith("[user]: question") and lines[1].endswith(CUT_MARK)
    assert [line.split("]:")[0] for line in lines[2:5]] == [
        "[Agent17 @agent17",
        "[Agent18 @agent18",
        "[Agent19 @agent19",
    ]
    assert lines[5] == "Also answered by: " + ", ".join(f"@{k}" for k in keys[:10]) + " and 7 more"
    assert estimate_tokens(exchange) < 600
    assert read_previous_answerers("...\n" + exchange)[:3] == ("agent0", "agent1", "agent2")
    assert read_previous_answerers("...\n" + exchange)[-3:] == ("agent17", "agent18", "agent19")


def test_the_previous_exchange_gives_way_before_the_roster(roster):
    history = [HistoryMessage(role="user", content="Which index?"), answer_of("bob", "x " * 300)]
    whole = build_routing_messages(
        user_input="Elaborate on that.", roster=roster, room_goal="Ship v1", history=history
    )
    bare = build_routing_messages(
        user_input="Elaborate on that.", roster=roster, room_goal="Ship v1"
    )
    assert PREVIOUS_EXCHANGE_HEADING in whole[0].content
    assert read_previous_answerers(whole[0].content) == ("bob",)

    fitted = fit_routing_messages(
        user_input="Elaborate on that.",
        roster=roster,
        room_goal="Ship v1",
        input_budget=prompt_tokens(whole) - 1,
        history=history,
    )

    assert fitted == bare
    assert read_previous_answerers(fitted[0].content) == ()
