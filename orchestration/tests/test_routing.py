import json
import logging

from orchestration.routing import build_routing_messages, parse_routing, read_roster

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


def test_garbage_falls_back_to_first_agent_and_logs_the_raw_excerpt(caplog):
    raw = "I think Bob should answer this, he knows databases. " + "x" * 300
    with caplog.at_level(logging.WARNING, logger="orchestration.routing"):
        decision = parse_routing(raw, KEYS)
    assert decision.selected_agent_keys == ("ada",)
    assert decision.fallback_used is True
    assert len(caplog.records) == 1
    assert caplog.records[0].levelno == logging.WARNING
    assert raw[:200] in caplog.text
    assert raw[:201] not in caplog.text


def test_all_unknown_keys_fall_back(caplog):
    with caplog.at_level(logging.WARNING, logger="orchestration.routing"):
        decision = parse_routing('{"selected_agent_keys": ["zed", "mallory"]}', KEYS)
    assert decision.selected_agent_keys == ("ada",)
    assert decision.fallback_used is True
    assert "zed" in caplog.text


def test_some_unknown_keys_are_dropped_with_a_warning_but_no_fallback(caplog):
    with caplog.at_level(logging.WARNING, logger="orchestration.routing"):
        decision = parse_routing('{"selected_agent_keys": ["zed", "cleo"]}', KEYS)
    assert decision.selected_agent_keys == ("cleo",)
    assert decision.fallback_used is False
    assert "zed" in caplog.text


def test_empty_selection_falls_back(caplog):
    with caplog.at_level(logging.WARNING, logger="orchestration.routing"):
        decision = parse_routing('{"selected_agent_keys": []}', KEYS)
    assert decision.selected_agent_keys == ("ada",)
    assert decision.fallback_used is True
    assert '{"selected_agent_keys": []}' in caplog.text


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
