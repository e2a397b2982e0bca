"""Pagination: page numbers for lists, cursors for the timeline and the sessions by activity.

Both refuse a `page_size` that is not a positive whole number (400) instead of quietly using
the default, as the schema says (`minimum: 1`); sizes over the maximum are cut to it. A `page`
that is not a page number, empty included, is DRF's 404 "Invalid page."; a cursor the paginator
did not write, DRF's 404 "Invalid cursor".
"""

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination, PageNumberPagination
from rest_framework.utils.urls import remove_query_param, replace_query_param

# PostgreSQL's `integer`, the type of the timeline's `sequence`.
_LARGEST_SEQUENCE = 2**31 - 1


# Python refuses to read a number of more than 4,300 digits (a ValueError, so a 500); no
# page, size or position needs more than these.
_MOST_DIGITS = 18


def _is_whole_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _whole_number(text: str) -> int | None:
    """`text` as a whole number (ASCII digits only, at most `_MOST_DIGITS` once leading zeros
    are dropped, which no page or position needs more than), else None."""
    if not _is_whole_number(text):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MOST_DIGITS else None


# The schema's examples of a page's links: its list's own path, on an example host.
EXAMPLE_HOST = "https://pantheon.example.com"
EXAMPLE_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


class StrictPageSize:
    page_size_query_param = "page_size"
    max_page_size = 200
    # The list whose page the schema describes (pantheon.schema.AutoSchema sets it): its links
    # are the examples of `next` and `previous`.
    schema_path = "/api/v1/"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not _is_whole_number(raw) or not raw.strip("0"):
            raise ValidationError({self.page_size_query_param: ["Use a whole number from 1."]})
        size = _whole_number(raw)  # None: more digits than any size needs, so over the maximum
        return self.max_page_size if size is None else min(size, self.max_page_size)

    def get_paginated_response_schema(self, schema):
        page = super().get_paginated_response_schema(schema)
        # Every page has both links, null at either end of the list.
        page["required"] = [*page["required"], "next", "previous"]
        # DRF's examples are placeholders (`http://api.example.org/accounts/`), and its cursor
        # page's `next` ends in a stray `"`, which its own `uri` format refuses.
        url = EXAMPLE_HOST + re.sub(r"\{[^}]+\}", EXAMPLE_ID, self.schema_path)
        # `example_links`: the second page's `next` and `previous`, by the kind of pages.
        examples = self.example_links(url)  # type: ignore[attr-defined]
        for link, example in zip(("next", "previous"), examples, strict=True):
            page["properties"][link]["example"] = example
        return page

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = (
                    f"Results per page (default {self.page_size}; more than "
                    f"{self.max_page_size} means {self.max_page_size})."
                )
        return parameters


class DefaultPagination(StrictPageSize, PageNumberPagination):
    page_size = 50
    last_page_strings = ()  # the schema says `page` is a number; "last" is not one

    def get_page_number(self, request, paginator):
        # DRF reads `?page=` with int(): an empty one as page 1, and "+1", " 1" or Arabic-Indic
        # digits as a number; the schema's integer is ASCII digits, as `page_size` reads it.
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and _whole_number(raw) is None:
            raise NotFound(self.invalid_page_message)
        return super().get_page_number(request, paginator)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters

    def get_paginated_response_schema(self, schema):
        page = super().get_paginated_response_schema(schema)
        page["properties"]["count"]["example"] = 2 * self.page_size + 20  # the second of three
        return page

    def example_links(self, url: str) -> tuple[str, str]:
        # As DRF writes them: the first page's link has no `page`.
        return (
            replace_query_param(url, self.page_query_param, 3),
            remove_query_param(url, self.page_query_param),
        )


class StrictCursor:
    """A cursor is taken only as the paginator writes one (`encode_cursor` gives it back
    unchanged); anything else is DRF's 404 "Invalid cursor", as README and the schema say of an
    unknown cursor. DRF checks a cursor's shape only: it read any base64 with no known key
    ("nope") as the start of the list, and answered the first page; a forged position reached
    the database (a 500). A written cursor has its keys in DRF's order, its offset in digits and
    a position as `position_written` says. The paginator writes some with no position: an
    offset (a page whose rows all share one position), the end of the list read backwards (the
    previous link of an empty page past the end: `r=1`), and the start of the list (the next
    link of an empty page read backwards: the empty cursor, `cursor=`)."""

    example_positions: tuple[str, str]  # of the second page's last and first rows

    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)  # type: ignore[misc]
        if cursor is None:
            return None
        given = request.query_params[self.cursor_query_param]  # type: ignore[attr-defined]
        written = cursor.offset < 10**_MOST_DIGITS  # a database's offset holds it
        if cursor.position is not None and not self.position_written(cursor.position):
            written = False
        if not written or self._as_written(cursor) != given:
            raise NotFound(self.invalid_cursor_message)  # type: ignore[attr-defined]
        return cursor

    def _as_written(self, cursor: Cursor) -> str:
        # `paginate_queryset` sets `base_url` before it decodes the cursor.
        link = self.encode_cursor(cursor)  # type: ignore[attr-defined]
        query = parse_qs(urlsplit(link).query, keep_blank_values=True)
        return query[self.cursor_query_param][0]  # type: ignore[attr-defined]

    def position_written(self, position: str) -> bool:
        """Whether `position` is one the paginator writes (a row's, by `str()`)."""
        raise NotImplementedError

    def example_links(self, url: str) -> tuple[str, str]:
        """The second page's `next` (after its last row) and `previous` (before its first)."""
        self.base_url = url
        last, first = self.example_positions
        return (
            self.encode_cursor(Cursor(offset=0, reverse=False, position=last)),  # type: ignore[attr-defined]
            self.encode_cursor(Cursor(offset=0, reverse=True, position=first)),  # type: ignore[attr-defined]
        )


class TimelinePagination(StrictPageSize, StrictCursor, CursorPagination):
    """Oldest first, stable under concurrent appends: a cursor never skips or repeats a row.
    A session's sequence numbers are unique, so its cursors hold a position, never an offset
    past a page: DRF's cap on an offset (`offset_cutoff`, 1,000) refuses only made-up ones
    (one read as 1,000 is not the one given)."""

    ordering = "sequence"
    page_size = 50
    example_positions = ("100", "51")
    # `?latest=true`: the newest page, where a chat opens, instead of the first; its `previous`
    # walks back (a cursor, once there is one, says where a page is).
    latest_query_param = "latest"

    def decode_cursor(self, request):
        latest = self._latest(request)  # read beside a cursor too: a bad value is a 400 alike
        cursor = super().decode_cursor(request)
        if cursor is None and latest:
            # The cursor DRF writes for the end of the list read backwards (`r=1`).
            return Cursor(offset=0, reverse=True, position=None)
        return cursor

    def _latest(self, request) -> bool:
        raw = request.query_params.get(self.latest_query_param)
        if raw is None or raw in ("false", "0"):
            return False
        if raw in ("true", "1"):
            return True
        raise ValidationError({self.latest_query_param: ["Use true or false."]})

    def get_schema_operation_parameters(self, view):
        return [
            *super().get_schema_operation_parameters(view),
            {
                "name": self.latest_query_param,
                "required": False,
                "in": "query",
                "description": "true: the newest page (oldest first within it), where a chat "
                "opens; follow `previous` for older messages. Without a cursor only.",
                "schema": {"type": "boolean", "default": False},
            },
        ]

    def position_written(self, position: str) -> bool:
        # A sequence number (PostgreSQL's `integer`): a forged `p=abc` reached the column.
        number = _whole_number(position)
        return number is not None and number <= _LARGEST_SEQUENCE and str(number) == position


class ActivityPagination(StrictPageSize, StrictCursor, CursorPagination):
    """Newest activity first (`last_activity_at`, from `sessions_with_activity`), ties broken by
    id so that every session has one place in the order and a cursor never repeats one."""

    ordering = ("-last_activity_at", "-id")
    page_size = 50
    # DRF's cursor holds the activity alone, so sessions of one activity are paged by offset,
    # however many there are (a thousand imported at once): its cap (1,000) would read the next
    # page's offset as 1,000 and answer that page again. The cap guards an index scan against
    # a forged offset: here the scan (`session_user_activity`) is of one user's sessions, so an
    # offset costs at most a read of all of them, as the first page cost before the index.
    offset_cutoff = None
    example_positions = ("2026-12-01 08:15:02.104233+00:00", "2026-12-03 19:45:20.967870+00:00")

    def position_written(self, position: str) -> bool:
        # A moment, as `str()` writes the database's (in UTC): a forged one reached the
        # timestamp comparison.
        try:
            moment = parse_datetime(position)
        except ValueError:
            return False
        return moment is not None and moment.utcoffset() == timedelta(0) and str(moment) == position
