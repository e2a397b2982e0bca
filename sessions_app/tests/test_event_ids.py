"""Event ids order a turn's events; the turn's last event comes after anything a client saw."""

from sessions_app import events


def test_a_turn_that_breaks_off_mid_step_still_ends_after_what_the_client_saw():
    clock = events.StepClock()
    seen = [
        events.step_started(clock, sequence=2, agent={"agent_key": "ada"}),
        events.step_delta(clock, sequence=2, text="Half an answ", start=0),
    ]
    failed = events.turn_failed(code="server_error", body=None)

    ids = [event.id for event in seen] + [failed.id]
    assert ids == sorted(ids) and len(set(ids)) == 3
    # A client resuming after the last delta it saw (Last-Event-ID) gets the failure.
    assert list(events.after([*seen, failed], seen[-1].id)) == [failed]


def test_steps_take_ids_by_their_text_and_the_end_comes_last():
    clock = events.StepClock()
    first = events.step_started(clock, sequence=2, agent={"agent_key": "ada"})
    delta = events.step_delta(clock, sequence=2, text="Hello", start=0)
    done = events.step_completed(clock, {"content": "Hello"})
    clock.advance(len("Hello"))
    second = events.step_started(clock, sequence=3, agent={"agent_key": "bob"})

    assert [first.id, delta.id, done.id, second.id] == [3, 8, 9, 10]
    assert events.turn_failed(code="turn_failed", body=None).id > second.id
