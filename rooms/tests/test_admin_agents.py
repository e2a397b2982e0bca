"""Agents in the admin take what the API takes: an enabled alias, a bounded role prompt, tool
permissions as a list of short names, and a key once per owner."""

import pytest
from django.conf import settings

from pantheon.testing.admin import admin_url as url
from pantheon.testing.admin import client_for
from rooms.models import Agent
from usage.models import ModelAlias

pytestmark = pytest.mark.django_db


@pytest.fixture
def boss(make_operator):
    return client_for(make_operator("Owner", "boss"))


def form(agent: Agent, **changes) -> dict:
    return {
        "agent_key": agent.agent_key,
        "name": agent.name,
        "model_alias": agent.model_alias,
        "role_prompt": agent.role_prompt,
        "tool_permissions": "[]",
        **changes,
    }


def test_a_key_its_owner_uses_already_is_a_form_error_not_a_500(boss, owner, make_agent):
    make_agent(owner, "ada")
    bo = make_agent(owner, "bo")

    response = boss.post(url(Agent, "change", bo.pk), form(bo, agent_key="ada"))

    assert response.status_code == 200
    assert "owner has an agent with this key already" in response.content.decode()
    assert Agent.objects.get(pk=bo.pk).agent_key == "bo"


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"model_alias": "no_such_alias"}, "model_alias"),
        ({"tool_permissions": '{"x": 1}'}, "tool_permissions"),
        ({"tool_permissions": '["search", ""]'}, "tool_permissions"),
        ({"tool_permissions": '["search", "search"]'}, "tool_permissions"),
        (
            {"tool_permissions": str([f"t{i}" for i in range(51)]).replace("'", '"')},
            "tool_permissions",
        ),
        ({"role_prompt": "x" * (settings.PANTHEON_MAX_ROLE_PROMPT_CHARS + 1)}, "role_prompt"),
    ],
)
def test_what_the_api_refuses_the_admin_refuses(boss, owner, make_agent, changes, field):
    ada = make_agent(owner, "ada")

    response = boss.post(url(Agent, "change", ada.pk), form(ada, **changes))

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    ada.refresh_from_db()
    assert ada.model_alias == "deepseek" and ada.tool_permissions == []


def test_a_tool_list_that_is_no_list_is_explained_in_the_console(boss, owner, make_agent):
    ada = make_agent(owner, "ada")

    response = boss.post(url(Agent, "change", ada.pk), form(ada, tool_permissions='"web"'))

    assert response.context["adminform"].form.errors["tool_permissions"] == [
        'Expected a list of tool names, such as ["web_search"].'
    ]
    assert "JSONString" not in response.content.decode()


def test_a_tool_permission_error_names_the_item_it_is_about(boss, owner, make_agent):
    """`[1, 2]` read "Must be a string. Must be a string.": which item, the page did not say."""
    ada = make_agent(owner, "ada")

    wrong = boss.post(url(Agent, "change", ada.pk), form(ada, tool_permissions='["web", 2, 3]'))
    added = boss.post(
        url(Agent, "add"),
        {**form(ada, agent_key="kay"), "owner": owner.pk, "tool_permissions": "[1, 2]"},
    )

    assert wrong.context["adminform"].form.errors["tool_permissions"] == [
        "Item 2: Must be a string.",
        "Item 3: Must be a string.",
    ]
    assert added.context["adminform"].form.errors["tool_permissions"] == [
        "Item 1: Must be a string.",
        "Item 2: Must be a string.",
    ]
    assert "Item 1: Must be a string." in added.content.decode()
    # A fault of the list itself names no item.
    twice = boss.post(url(Agent, "change", ada.pk), form(ada, tool_permissions='["a", "a"]'))
    assert not any(
        error.startswith("Item")
        for error in twice.context["adminform"].form.errors["tool_permissions"]
    )


def test_an_agent_keeps_its_alias_once_that_is_disabled(boss, owner, make_agent):
    ada = make_agent(owner, "ada", model_alias="qwen")
    ModelAlias.objects.filter(alias="qwen").update(enabled=False)

    page = boss.get(url(Agent, "change", ada.pk)).content.decode()
    saved = boss.post(url(Agent, "change", ada.pk), form(ada, name="Ada Lovelace"))

    assert "qwen (disabled)" in page
    assert saved.status_code == 302
    ada.refresh_from_db()
    assert ada.name == "Ada Lovelace" and ada.model_alias == "qwen"


def test_the_add_page_shows_no_id_the_agent_would_not_get(boss, owner):
    page = boss.get(url(Agent, "add")).content.decode()
    added = boss.post(
        url(Agent, "add"),
        {
            "owner": owner.pk,
            "agent_key": "kay",
            "name": "Kay",
            "model_alias": "deepseek",
            "role_prompt": "",
            "tool_permissions": '["search"]',
        },
    )

    assert "Id:" not in page
    assert added.status_code == 302
    assert Agent.objects.get(agent_key="kay").tool_permissions == ["search"]


def test_a_refused_page_is_titled_by_the_agent_as_saved(boss, owner, make_agent, staff):
    """The page of a refused key was titled "Error: Ada (@日本)", its heading and breadcrumbs
    alike: the key refused, set on the agent before the check refused it. A user's page with a
    username taken read as that other user's."""
    ada = make_agent(owner, "ada")

    refused = boss.post(url(Agent, "change", ada.pk), form(ada, agent_key="日本"))
    user_page = client_for(staff).post(
        f"/admin/auth/user/{owner.pk}/change/",
        {"username": "staff", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"},
    )

    page = refused.content.decode()
    assert refused.status_code == 200 and 'class="errorlist' in page
    assert "<title>Error: Ada (@ada) | Change agent | Pantheon</title>" in page
    assert "<h2>Ada (@ada)</h2>" in page
    assert "日本" not in page.split('<div id="content-main">')[0]  # title, breadcrumbs, heading
    assert Agent.objects.get(pk=ada.pk).agent_key == "ada"
    assert user_page.status_code == 200
    assert "<title>Error: owner | Change user | Pantheon</title>" in user_page.content.decode()
