"""Content negotiation that takes `?format=` at its word and `Accept` at its q-values."""

import functools
import math

from django.http.request import MediaType
from rest_framework.exceptions import NotAcceptable, NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings

UNKNOWN_FORMAT = "Unknown format: use one that the schema lists, or none."


def _covers(accepted: MediaType, offered: MediaType) -> bool:
    """Whether a range the client accepts (`*/*`, `text/*`, `text/event-stream`, with or
    without parameters such as `indent`) takes the type a renderer offers."""
    return accepted.main_type in ("*", offered.main_type) and accepted.sub_type in (
        "*",
        offered.sub_type,
    )


def _quality(accepted: MediaType) -> float:
    """The range's q; one that is not a number from 0 to 1 (`q=abc`, `q=nan`) counts as 1."""
    quality = accepted.quality
    return quality if math.isfinite(quality) else 1.0


class StrictContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation with three corrections.

    - `?format=`: DRF ignores an empty one and answers in the default format; the schema lists
      the formats an operation speaks, and "" is none of them: a 404, as for an unknown format,
      whose message says it is the format that was not found (DRF's says "Not found.", as if
      the resource were gone).
    - `?format=` wins over `Accept`: it is what a client whose HTTP library sends a fixed
      `Accept` uses instead, as the schema says ("in place of `Accept`"). DRF still required
      `Accept` to take the format's type: `?format=sse` with `Accept: application/json` was a
      406. `Accept` still ranks the format's renderers, if several, and its parameters
      (`indent`) still reach the one it covers.
    - `Accept`: DRF ranks the client's media ranges by how specific they are and ignores their
      q-values, so `application/json;q=0.1, text/event-stream` got JSON, `application/json;q=0`
      did not refuse JSON, and `text/event-stream;q=0.9` was answered in JSON labelled as an
      event stream. Here, as HTTP says (RFC 9110 §12.5.1), each renderer's type takes the
      q-value of the most specific range that covers it, q=0 refuses it, and the highest q
      wins; among equals, the more specific range, then the one the client listed first, then
      the renderer the view lists first.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        override = request.query_params.get(api_settings.URL_FORMAT_OVERRIDE)
        if override == "":
            raise NotFound(UNKNOWN_FORMAT)
        format = format_suffix or override
        if format:
            self.filter_renderers(renderers, format)  # a format none of them speaks: 404
        # The choice depends on the client's ranges, the format and the renderers' types
        # alone: made once for each (`_choice`), not parsed and compared for every request.
        offered = tuple((renderer.media_type, renderer.format) for renderer in renderers)
        choice = _choice(tuple(self.get_accept_list(request)), format, offered)
        if choice is None:
            raise NotAcceptable(available_renderers=renderers)
        position, media_type = choice
        return renderers[position], media_type

    def filter_renderers(self, renderers, format):
        speaking = [renderer for renderer in renderers if renderer.format == format]
        if not speaking:
            raise NotFound(UNKNOWN_FORMAT)
        return speaking


@functools.lru_cache(maxsize=256)
def _choice(
    accepted: tuple[str, ...], format: str | None, offered: tuple[tuple[str, str], ...]
) -> tuple[int, str] | None:
    """The renderer `StrictContentNegotiation` chooses among those `offered` (their media types
    and formats, in the view's order) for the client's `accepted` ranges (the Accept header's
    tokens) and `format` (a format some of them speak, or none): its position and the media
    type to answer with; None when `Accept` takes none of them (406)."""
    speaking = [
        (position, media_type)
        for position, (media_type, speaks) in enumerate(offered)
        if not format or speaks == format
    ]
    ranges = [MediaType(token) for token in accepted]
    best = None
    for order, (position, media_type) in enumerate(speaking):
        offered_type = MediaType(media_type)
        covering = [
            # Parameters other than q (`indent=2`) are rendering hints here, not a more
            # specific type: such a range counts as its bare type, after it among equals.
            ((min(range_.specificity, 2), not range_.range_params, -index), range_)
            for index, range_ in enumerate(ranges)
            if _covers(range_, offered_type)
        ]
        if not covering:
            continue
        (specificity, _, client_order), range_ = max(covering, key=lambda c: c[0])
        quality = _quality(range_)
        if quality == 0:
            continue
        rank = (quality, specificity, client_order, -order)
        if best is None or rank > best[0]:
            best = (rank, position, media_type, range_)
    if best is None:
        if format:  # `Accept` takes none of the format's types: the format wins
            return speaking[0]
        return None
    _, position, media_type, range_ = best
    # The renderer's own type, with the client's parameters but its q (JSONRenderer reads
    # `indent` from it; the turn endpoints compare it with text/event-stream).
    params = "".join(f"; {key}={value}" for key, value in range_.range_params.items())
    return position, f"{media_type}{params}"


def answer_in_json(request) -> None:
    """Have DRF render this request's answer as JSON, whatever was negotiated: the errors of a
    view whose answers are another type (an event stream, the YAML schema) stay JSON, as every
    answer under /api/ is. Call it from `finalize_response`, before DRF's."""
    request.accepted_renderer = JSONRenderer()
    request.accepted_media_type = JSONRenderer.media_type
