"""For tests of the operator console: a logged-in client and the admin's URLs by model."""

from html.parser import HTMLParser

from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def admin_url(model, view: str, *args) -> str:
    """`admin_url(Turn, "change", turn.pk)`: the admin page `view` of `model`."""
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


class PostedBack(HTMLParser):
    """What a browser posts when a page's form (`<form id=...>`) is saved untouched: each
    enabled field's value as shown (a checked box's, a select's selected options or its first,
    a multiple select's selected options alone, a text box's text), lines ended by CR LF as
    browsers send every value, and the button `_save`. The inline's hidden template row is
    posted too, as a browser posts it."""

    def __init__(self, page: str, form_id: str):
        super().__init__()
        self.form_id, self.inside = form_id, False
        self.data: dict[str, list[str]] = {}
        # name, selected, all, whether several may be selected
        self._select: tuple[str, list[str], list[str], bool] | None = None
        self._textarea: tuple[str, list[str]] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self.inside = attributes.get("id") == self.form_id
        if not self.inside or "disabled" in attributes:
            return
        name = attributes.get("name")
        if tag == "input" and name:
            kind = attributes.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in attributes:
                return
            if kind in ("submit", "button", "reset", "image", "file") and name != "_save":
                return
            # A ticked box without a value sends "on"; a value's lines end by CR LF when sent.
            default = "on" if kind in ("checkbox", "radio") else ""
            value = attributes.get("value", default) or ""
            self.data.setdefault(name, []).append(_crlf(value))
        elif tag == "select" and name:
            self._select = (name, [], [], "multiple" in attributes)
        elif tag == "option" and self._select:
            value = attributes.get("value") or ""
            self._select[2].append(value)
            if "selected" in attributes:
                self._select[1].append(value)
        elif tag == "textarea" and name:
            self._textarea = (name, [])

    def handle_data(self, data):
        if self._textarea:
            self._textarea[1].append(data)

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select:
            name, selected, shown, multiple = self._select
            # A multiple select with none selected sends nothing; a single one its first.
            if selected or not multiple:
                self.data[name] = selected or shown[:1]
            self._select = None
        elif tag == "textarea" and self._textarea:
            name, text = self._textarea
            # The newline after the tag is not the text's (HTML drops it).
            value = "".join(text).removeprefix("\r\n").removeprefix("\n")
            self.data[name] = [_crlf(value)]
            self._textarea = None


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def posted_back(page: str, form_id: str) -> dict[str, list[str]]:
    """The form `form_id` of `page` as a browser posts it saved as shown (`PostedBack`)."""
    return PostedBack(page, form_id).data


def opened(client: Client, page: str, form_id: str) -> dict[str, list[str]]:
    """`page` opened in a tab: its form `form_id` as the browser posts it saved as shown (type
    over it what the operator changes)."""
    shown = client.get(page)
    assert shown.status_code == 200, shown.status_code
    return posted_back(shown.content.decode(), form_id)


def refusals(response) -> list[str]:
    """What a change page posted and refused says above its form."""
    return list(response.context["adminform"].form.non_field_errors())


def two_tabs(user, page: str, form_id: str):
    """`page` opened by `user` in two tabs: ((tab A's client, its form), (tab B's, its form))."""
    tab_a, tab_b = client_for(user), client_for(user)
    return (tab_a, opened(tab_a, page, form_id)), (tab_b, opened(tab_b, page, form_id))


def elsewhere(field: str, now: str) -> str:
    """What a change page says of `field` changed in another tab since it was opened."""
    return (
        f"{field} was changed elsewhere since this page was opened: nothing was saved. It is "
        f"now {now}, as shown below: make your change to it again if it still holds."
    )


def history(row) -> list[str]:
    """The change messages the admin logged for `row`, oldest first."""
    entries = LogEntry.objects.filter(object_id=str(row.pk)).order_by("pk")
    return [entry.get_change_message() for entry in entries]


def post_and_updates(client: Client, page: str, data: dict, table: str):
    """Post `data` to `page`: (the response, the UPDATE statements it ran on `table`)."""
    with CaptureQueriesContext(connection) as queries:
        response = client.post(page, data)
    writes = [q["sql"] for q in queries if q["sql"].startswith(f'UPDATE "{table}"')]
    return response, writes
