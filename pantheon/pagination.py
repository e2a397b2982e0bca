from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, PageNumberPagination

# PostgreSQL's `integer`, the type of the timeline's `sequence`.
_LARGEST_SEQUENCE = 2**31 - 1


class DefaultPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class TimelinePagination(CursorPagination):
    """Oldest first, stable under concurrent appends: a cursor never skips or repeats a row."""

    ordering = "sequence"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request):
        # DRF checks the cursor's shape, not its position: a forged `p=abc` would reach the
        # integer column (a 500). Positions are sequence numbers.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            position = cursor.position
            if not (position.isascii() and position.isdigit()) or int(position) > _LARGEST_SEQUENCE:
                raise NotFound(self.invalid_cursor_message)
        return cursor
