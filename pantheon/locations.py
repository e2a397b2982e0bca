"""Where a 201's new object lives: its `Location` header (RFC 9110, 10.2.2), for a client that
follows links rather than building paths from ids. A path, not an absolute URL: the scheme and
host are the ones the client called (a proxy in front of the server may change both)."""

import functools
import uuid

from django.conf import settings
from django.urls import get_script_prefix, get_urlconf, reverse

# Stands for the id in a route's path, reversed once (`_path_of_a_uuid`).
_STAND_IN = uuid.UUID(int=0)


def location(view_name: str, pk) -> dict[str, str]:
    """The header for the object `view_name` (a detail route taking `pk`) shows."""
    if isinstance(pk, uuid.UUID):
        # Django's `reverse` walks the URL patterns and checks its result against the route's
        # regex (about 50 µs, on every turn's answer); a UUID's path is the route's with the id
        # in its place, the same string.
        path = _path_of_a_uuid(view_name, get_script_prefix(), get_urlconf(settings.ROOT_URLCONF))
        return {"Location": path.replace(str(_STAND_IN), str(pk))}
    return {"Location": reverse(view_name, kwargs={"pk": pk})}


@functools.lru_cache(maxsize=64)
def _path_of_a_uuid(view_name: str, script_prefix: str, urlconf) -> str:
    """`reverse`'s path for `view_name` with the stand-in id, under this script prefix and
    URLconf (which `reverse` reads where it runs: the keys say which it read)."""
    return reverse(view_name, kwargs={"pk": _STAND_IN}, urlconf=urlconf)


class LocatesCreated:
    """For a router's viewset: its create's 201 says where the new object is (DRF's own
    `get_success_headers` looks for a `url` field, which these bodies do not have)."""

    basename: str

    def get_success_headers(self, data) -> dict[str, str]:
        return location(f"{self.basename}-detail", data["id"])
