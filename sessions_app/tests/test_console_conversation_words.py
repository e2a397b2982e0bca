"""A conversation's words are shown in the console only to who may view its messages
(`sessions_app.view_message`): a turn's input and an Idempotency-Key's stored answer hold them
too, and their pages showed them to whoever may view turns or keys, and their lists answered
filters on them (`?user_input__icontains=`), a way to learn which turns said what."""

import pytest
from django.contrib.auth.models import Permission

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from sessions_app.models import IdempotencyKey, Message, SessionSummary, Turn

pytestmark = pytest.mark.django_db

WORDS = "my landlord's name is Ezekiel Quarrington"


@pytest.fixture
def conversation(owner, make_agent, make_room, make_session):
    session = make_session(owner, room=make_room(owner, [make_agent(owner, "ada")]))
    turn = Turn.objects.create(
        session=session, turn_index=1, mode="manual", user_input=f"@ada {WORDS}"
    )
    Message.objects.create(session=session, turn=turn, sequence=1, role="user", content=WORDS)
    key = IdempotencyKey.objects.create(
        user=owner,
        key="retry-1",
        fingerprint="f" * 64,
        state="done",
        turn=turn,
        response_status=201,
        response_body={"user_input": f"@ada {WORDS}", "messages": [{"content": WORDS}]},
    )
    return turn, key


@pytest.fixture
def viewer(django_user_model):
    def make(*codenames: str):
        user = django_user_model.objects.create_user(
            "viewer", password="viewer-pass-123", is_staff=True
        )
        user.user_permissions.add(
            *Permission.objects.filter(
                content_type__app_label="sessions_app", codename__in=codenames
            )
        )
        return user

    return make


def test_who_may_view_turns_but_not_messages_reads_no_words(conversation, viewer):
    turn, key = conversation
    client = client_for(viewer("view_turn", "view_idempotencykey"))

    turn_page = client.get(url(Turn, "change", turn.pk))
    key_page = client.get(url(IdempotencyKey, "change", key.pk))

    assert turn_page.status_code == key_page.status_code == 200
    for page in (turn_page, key_page):
        text = page.content.decode()
        assert "Ezekiel" not in text
        assert "withheld: only who may view messages reads a conversation" in text
    assert "User input:" in turn_page.content.decode()
    assert "Response body:" in key_page.content.decode()


@pytest.mark.parametrize(
    ("model", "lookup"),
    [
        (Turn, "user_input__icontains"),
        (Turn, "user_input"),
        (IdempotencyKey, "response_body__messages__0__content__icontains"),
        (IdempotencyKey, "response_body__icontains"),
    ],
)
def test_their_lists_answer_no_filter_on_the_words(conversation, viewer, model, lookup):
    client = client_for(viewer("view_turn", "view_idempotencykey"))

    response = client.get(url(model, "changelist"), {lookup: "Ezekiel"})

    assert response.status_code == 400


def test_who_may_view_messages_reads_and_filters_them(conversation, viewer):
    turn, key = conversation
    client = client_for(viewer("view_turn", "view_idempotencykey", "view_message"))

    turn_page = client.get(url(Turn, "change", turn.pk)).content.decode()
    key_page = client.get(url(IdempotencyKey, "change", key.pk)).content.decode()
    found = client.get(url(Turn, "changelist"), {"user_input__icontains": "Ezekiel"})

    assert WORDS.replace("'", "&#x27;") in turn_page
    assert "Ezekiel Quarrington" in key_page
    assert "only who may view messages" not in turn_page + key_page
    assert found.status_code == 200
    assert found.context["cl"].result_count == 1


@pytest.fixture
def summary(conversation):
    turn, _ = conversation
    return SessionSummary.objects.create(
        session=turn.session,
        turn=turn,
        from_sequence=1,
        to_sequence=1,
        summary_text=f"The user said {WORDS}.",
        key_facts=[f"landlord: {WORDS}"],
        decisions=["Ezekiel stays"],
        open_questions=["Is Ezekiel kind?"],
        action_items=["Call Ezekiel"],
    )


def test_a_summary_of_the_words_is_withheld_too(summary, viewer):
    """A session's summary is its words condensed (and its facts quoted): its page and its
    list's search by words told one who may view summaries but not messages what was said."""
    client = client_for(viewer("view_sessionsummary"))

    page = client.get(url(SessionSummary, "change", summary.pk))
    found = client.get(url(SessionSummary, "changelist"), {"q": "Ezekiel"})
    filtered = client.get(url(SessionSummary, "changelist"), {"summary_text__icontains": "Ezekiel"})

    assert page.status_code == 200
    assert "Ezekiel" not in page.content.decode()
    assert "withheld: only who may view messages reads a conversation" in page.content.decode()
    assert found.status_code == 200
    assert found.context["cl"].result_count == 0
    assert filtered.status_code == 400


def test_who_may_view_messages_reads_and_finds_a_summary(summary, viewer):
    client = client_for(viewer("view_sessionsummary", "view_message"))

    page = client.get(url(SessionSummary, "change", summary.pk)).content.decode()
    found = client.get(url(SessionSummary, "changelist"), {"q": "Ezekiel"})

    assert "Call Ezekiel" in page
    assert "only who may view messages" not in page
    assert found.context["cl"].result_count == 1


def test_a_summary_is_found_by_the_words_of_its_lists(summary, viewer):
    """Words of a summary, as the search box says: those of its facts, decisions, open
    questions and action items too, which its page shows under its text (a word of a decision
    alone found nothing)."""
    summary.summary_text = "A short talk."
    summary.save()
    client = client_for(viewer("view_sessionsummary", "view_message"))

    found = {
        term: client.get(url(SessionSummary, "changelist"), {"q": term}).context["cl"].result_count
        for term in ("landlord", "stays", "kind?", "call ezekiel", "short talk", "nowhere")
    }

    assert found == {
        "landlord": 1,
        "stays": 1,
        "kind?": 1,
        "call ezekiel": 1,
        "short talk": 1,
        "nowhere": 0,
    }
