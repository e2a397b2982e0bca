"""Where a 201's new object lives: its `Location` header (RFC 9110, 10.2.2), for a client that
follows links rather than building paths from ids. A path, not an absolute URL: the scheme and
host are the ones the client called (a proxy in front of the server may change both)."""

from django.urls import reverse


def location(view_name: str, pk) -> dict[str, str]:
    """The header for the object `view_name` (a detail route taking `pk`) shows."""
    return {"Location": reverse(view_name, kwargs={"pk": pk})}


class LocatesCreated:
    """For a router's viewset: its create's 201 says where the new object is (DRF's own
    `get_success_headers` looks for a `url` field, which these bodies do not have)."""

    basename: str

    def get_success_headers(self, data) -> dict[str, str]:
        return location(f"{self.basename}-detail", data["id"])
