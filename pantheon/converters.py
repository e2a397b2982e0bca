"""URL path converters."""

import uuid

from django.urls import register_converter


class AnyCaseUUIDConverter:
    """A UUID in either case, as RFC 9562 has it read (Django's `uuid` converter takes lower
    case only, so an id a client upper-cased was a 404 in the path and fine in `?room=`).
    The view gets a `uuid.UUID`, as from Django's."""

    regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value) -> str:
        return str(value)


ID = "id"  # <id:session_id>, and the viewsets' lookup_value_converter


def register() -> None:
    register_converter(AnyCaseUUIDConverter, ID)
