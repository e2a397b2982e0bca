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
