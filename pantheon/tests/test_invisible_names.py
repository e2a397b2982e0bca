"""A name with nothing to see is blank: zero-width spaces, joiners, a BOM, a soft hyphen, an
ideographic space, tag characters or the braille blank are refused where `"   "` is (400, the
field named), in the API and in the console, and a title of them is an empty title. Visible
text keeps its invisible characters, but not at its ends, where they are trimmed as whitespace
is. A name may not open with a bidi override, embedding or isolate, which reorders what follows
(U+202E "\u202egnp.exe" reads "exe.png"); right-to-left names need none and are kept."""

import pytest

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from rooms.models import Agent, Room
from sessions_app.models import Session

pytestmark = pytest.mark.django_db

INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200c\u200d",  # zero-width non-joiner, joiner
    "\u2060",  # word joiner
    "\ufeff",  # BOM
    "\u00ad",  # soft hyphen
    "\u2062\u2063",  # invisible times and separator (format characters)
    "\u3000",  # ideographic space
    "\u00a0 \u200b\t",  # no-break space, space, zero-width space, tab
    "\u3164",  # Hangul filler
    "\ufe0f\u034f",  # a variation selector, the combining grapheme joiner
    "\U000e0041\U000e0064\U000e0061\U000e007f",  # tag characters alone (beyond the BMP)
    "\U000e0100\u200b",  # a supplementary variation selector
    "\u2800\u2800",  # braille pattern blank
]

# A bidi override, embedding or isolate before the first visible character.
REORDERING = [
    "\u202egnp.exe",  # right-to-left override: reads "exe.png"
    "\u202bAda\u202c",  # right-to-left embedding ... pop
    " \u2067Ada\u2069",  # right-to-left isolate ... pop, after a space
    "\u200b\u2066Ada",  # left-to-right isolate after a zero-width space
    "\u202a\u202d\u2068Ada",  # LRE, LRO, first strong isolate
]
BIDI_REFUSAL = (
    "May not begin with a bidi override, embedding or isolate (U+202A-U+202E, U+2066-U+2069): "
    "it would change the order in which the rest reads."
)

# Visible text keeps its inner invisible characters; its ends are trimmed of zero-width ones.
KEPT = [
    ("\u200bAda\ufeff", "Ada"),
    ("Ad\u00ada", "Ad\u00ada"),
    ("\U0001f469\u200d\U0001f4bb", "\U0001f469\u200d\U0001f4bb"),  # woman technologist
    # The flag of Scotland ends with tag characters: kept.
    ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",) * 2,
    # And England's, led by a space.
    (
        " \U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
        "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    ),
    ("\U0001f1eb\U0001f1f7",) * 2,  # a flag of regional indicators
    ("\u2764\ufe0f\u200d\U0001f525",) * 2,  # heart on fire: a variation selector, a joiner
    ("\u0645\u062d\u0645\u062f",) * 2,  # Arabic
    ("\u200f\u05e9\u05e8\u05d4",) * 2,  # Hebrew led by a right-to-left mark
    ("\U00020000\U0002a6d6",) * 2,  # CJK beyond the BMP
    ("Ada \u202eadA",) * 2,  # an override after visible text
    ("\u2800Ada",) * 2,  # the braille blank before visible text
]


def agent_body(**overrides) -> dict:
    return {"agent_key": "ada", "name": "Ada", "model_alias": "deepseek", **overrides}


@pytest.mark.parametrize("name", INVISIBLE)
def test_a_room_of_invisible_characters_is_refused_as_blank(owner_client, owner, make_room, name):
    room = make_room(owner, name="Keep")

    created = owner_client.post("/api/v1/rooms", {"name": name}, format="json")
    patched = owner_client.patch(f"/api/v1/rooms/{room.pk}", {"name": name}, format="json")

    assert created.status_code == patched.status_code == 400
    assert created.json() == patched.json() == {"name": ["This field may not be blank."]}
    assert list(Room.objects.values_list("name", flat=True)) == ["Keep"]


@pytest.mark.parametrize("name", INVISIBLE)
def test_an_agent_of_invisible_characters_is_refused_as_blank(
    owner_client, owner, make_agent, name
):
    bo = make_agent(owner, "bo")

    created = owner_client.post("/api/v1/agents", agent_body(name=name), format="json")
    patched = owner_client.patch(f"/api/v1/agents/{bo.pk}", {"name": name}, format="json")

    assert created.status_code == patched.status_code == 400
    assert created.json() == patched.json() == {"name": ["This field may not be blank."]}
    assert list(Agent.objects.values_list("name", flat=True)) == ["Bo"]


@pytest.mark.parametrize("name", REORDERING)
def test_a_name_opening_with_a_bidi_override_is_refused(
    owner_client, owner, make_agent, make_room, name
):
    bo = make_agent(owner, "bo")
    room = make_room(owner, name="Keep")

    answers = [
        owner_client.post("/api/v1/rooms", {"name": name}, format="json"),
        owner_client.patch(f"/api/v1/rooms/{room.pk}", {"name": name}, format="json"),
        owner_client.post("/api/v1/agents", agent_body(name=name), format="json"),
        owner_client.patch(f"/api/v1/agents/{bo.pk}", {"name": name}, format="json"),
    ]
    session = owner_client.post(f"/api/v1/agents/{bo.pk}/sessions", {"title": name})

    assert [answer.status_code for answer in answers] == [400] * 4
    assert [answer.json() for answer in answers] == [{"name": [BIDI_REFUSAL]}] * 4
    assert (session.status_code, session.json()) == (400, {"title": [BIDI_REFUSAL]})
    assert list(Room.objects.values_list("name", flat=True)) == ["Keep"]
    assert list(Agent.objects.values_list("name", flat=True)) == ["Bo"]
    assert not Session.objects.exists()


def test_a_message_goal_or_role_prompt_may_open_with_a_bidi_control(
    owner_client, owner, make_agent, make_room, make_session, fake_gateway
):
    """Only names are held to it: a right-to-left writer's text may open with an embedding."""
    text = "\u202b\u05e9\u05dc\u05d5\u05dd\u202c"  # RLE, "shalom", PDF
    bo = make_agent(owner, "bo")
    session = make_session(owner, agent=bo)

    room = owner_client.patch(
        f"/api/v1/rooms/{make_room(owner, [bo]).pk}", {"goal": text}, format="json"
    )
    agent = owner_client.patch(f"/api/v1/agents/{bo.pk}", {"role_prompt": text}, format="json")
    turn = owner_client.post(
        f"/api/v1/sessions/{session.pk}/turns", {"message": text}, format="json"
    )

    assert (room.status_code, room.json()["goal"]) == (200, text)
    assert (agent.status_code, agent.json()["role_prompt"]) == (200, text)
    assert (turn.status_code, turn.json()["user_input"]) == (201, text)


def test_the_bidi_refusal_has_a_code_of_its_own():
    from rest_framework import serializers

    from rooms.serializers import RoomSerializer

    with pytest.raises(serializers.ValidationError) as refused:
        RoomSerializer().fields["name"].run_validation("\u202eAda")

    assert refused.value.get_codes() == ["bidi_control"]


@pytest.mark.parametrize("title", INVISIBLE)
def test_a_title_of_invisible_characters_is_no_title(owner_client, owner, make_agent, title):
    """A title may be empty (`"   "` is): one with nothing to see is stored empty."""
    agent = make_agent(owner, "ada")
    room = owner_client.post("/api/v1/rooms", {"name": "Research"}, format="json").json()

    in_room = owner_client.post(f"/api/v1/rooms/{room['id']}/sessions", {"title": title})
    direct = owner_client.post(f"/api/v1/agents/{agent.pk}/sessions", {"title": title})

    assert in_room.status_code == direct.status_code == 201
    assert in_room.json()["title"] == direct.json()["title"] == ""
    assert list(Session.objects.values_list("title", flat=True)) == ["", ""]


@pytest.mark.parametrize("sent, stored", KEPT)
def test_visible_names_are_kept_trimmed_of_invisible_ends(
    owner_client, owner, make_agent, sent, stored
):
    agent = make_agent(owner, "bo")

    room = owner_client.post("/api/v1/rooms", {"name": sent}, format="json")
    ada = owner_client.post("/api/v1/agents", agent_body(name=sent), format="json")
    session = owner_client.post(f"/api/v1/agents/{agent.pk}/sessions", {"title": sent})

    assert room.status_code == ada.status_code == session.status_code == 201
    assert room.json()["name"] == ada.json()["name"] == session.json()["title"] == stored
    assert Room.objects.get().name == Agent.objects.get(agent_key="ada").name == stored


def test_a_turn_message_of_invisible_characters_is_refused_as_blank(
    owner_client, owner, make_agent
):
    agent = make_agent(owner, "ada")
    session = owner_client.post(f"/api/v1/agents/{agent.pk}/sessions", {}).json()

    response = owner_client.post(
        f"/api/v1/sessions/{session['id']}/turns", {"message": "\u200b\ufeff"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"message": ["This field may not be blank."]}


def test_the_length_limit_counts_what_was_sent_before_trimming(owner_client):
    """As for whitespace: the schema's maxLength is the length sent."""
    response = owner_client.post("/api/v1/rooms", {"name": "R" + "\u200b" * 200}, format="json")

    assert response.status_code == 400
    assert response.json() == {"name": ["Ensure this field has no more than 200 characters."]}


# --- the console --------------------------------------------------------------------------------


@pytest.fixture
def boss(make_operator):
    return client_for(make_operator("Owner", "boss"))


def test_the_console_refuses_an_agent_or_room_name_of_invisible_characters(
    boss, owner, make_agent, make_room
):
    ada = make_agent(owner, "ada")
    room = make_room(owner, name="Research")
    agent_form = {
        "agent_key": "ada",
        "name": "\u200b\u3000",
        "model_alias": "deepseek",
        "role_prompt": "",
        "tool_permissions": "[]",
    }
    room_form = {
        "name": "\ufeff\u200d",
        "goal": "",
        "current_mode": room.current_mode,
        "seats-TOTAL_FORMS": "0",
        "seats-INITIAL_FORMS": "0",
    }

    agent_page = boss.post(url(Agent, "change", ada.pk), agent_form)
    room_page = boss.post(url(Room, "change", room.pk), room_form)

    assert agent_page.status_code == room_page.status_code == 200
    assert agent_page.context["adminform"].form.errors["name"] == ["This field may not be blank."]
    assert room_page.context["adminform"].form.errors["name"] == ["This field may not be blank."]
    ada.refresh_from_db()
    room.refresh_from_db()
    assert (ada.name, room.name) == ("Ada", "Research")


@pytest.mark.parametrize("name", ["\U000e0041\U000e007f", "\u2800", "\u202egnp.exe"])
def test_the_console_refuses_the_names_the_api_refuses(boss, owner, make_agent, make_room, name):
    ada = make_agent(owner, "ada")
    room = make_room(owner, name="Research")
    agent_form = {
        "agent_key": "ada",
        "name": name,
        "model_alias": "deepseek",
        "role_prompt": "",
        "tool_permissions": "[]",
    }
    room_form = {
        "name": name,
        "goal": "",
        "current_mode": room.current_mode,
        "seats-TOTAL_FORMS": "0",
        "seats-INITIAL_FORMS": "0",
    }
    refusal = BIDI_REFUSAL if name.startswith("\u202e") else "This field may not be blank."

    agent_page = boss.post(url(Agent, "change", ada.pk), agent_form)
    room_page = boss.post(url(Room, "change", room.pk), room_form)

    assert agent_page.status_code == room_page.status_code == 200
    assert agent_page.context["adminform"].form.errors["name"] == [refusal]
    assert room_page.context["adminform"].form.errors["name"] == [refusal]
    ada.refresh_from_db()
    room.refresh_from_db()
    assert (ada.name, room.name) == ("Ada", "Research")


def test_the_console_saves_a_title_of_invisible_characters_empty_and_trims_one(
    staff, owner, make_session
):
    client = client_for(staff)
    blank = make_session(owner, title="First")
    padded = make_session(owner, title="Second")

    saved = [
        client.post(url(Session, "change", blank.pk), {"title": "\u200b\u2060"}),
        client.post(url(Session, "change", padded.pk), {"title": "\ufeffKickoff\u200b"}),
    ]

    assert [page.status_code for page in saved] == [302, 302]
    blank.refresh_from_db()
    padded.refresh_from_db()
    assert (blank.title, padded.title) == ("", "Kickoff")
