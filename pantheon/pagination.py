from rest_framework.pagination import CursorPagination, PageNumberPagination


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


class ActivityPagination(CursorPagination):
    """Newest activity first (`last_activity_at`, from `sessions_with_activity`), ties broken by
    id so that every session has one place in the order and a cursor never repeats one."""

    ordering = ("-last_activity_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
