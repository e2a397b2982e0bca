from django.contrib import admin

from sessions_app.models import (
    IdempotencyKey,
    Message,
    Session,
    SessionSummary,
    Turn,
    TurnContextAudit,
)
from usage.models import USAGE_TOTAL_FIELDS


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "room", "agent", "started_by", "created_at", "deleted_at"]
    list_filter = [("deleted_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["id", "title", "started_by__username", "room__name"]
    list_select_related = ["room", "agent", "started_by"]
    raw_id_fields = ["room", "agent", "started_by"]


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ["sequence", "role", "agent_key", "model_alias", "status", "error_code", "content"]
    readonly_fields = fields
    ordering = ["sequence"]

    def has_add_permission(self, request, obj=None):
        return False


class TurnContextAuditInline(admin.StackedInline):
    model = TurnContextAudit
    extra = 0
    can_delete = False

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "session",
        "turn_index",
        "mode",
        "status",
        *USAGE_TOTAL_FIELDS,
        "created_at",
    ]
    list_filter = ["status", "mode", "created_at"]
    search_fields = ["id", "session__id", "user_input"]
    raw_id_fields = ["session"]
    readonly_fields = [
        *USAGE_TOTAL_FIELDS,
        "roster",
        "routing",
        "created_at",
        "completed_at",
    ]
    inlines = [MessageInline, TurnContextAuditInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["sequence", "session", "role", "agent_key", "status", "created_at"]
    list_filter = ["role", "status"]
    search_fields = ["session__id", "agent_key", "content"]
    raw_id_fields = ["session", "turn"]


@admin.register(SessionSummary)
class SessionSummaryAdmin(admin.ModelAdmin):
    list_display = ["session", "from_sequence", "to_sequence", "valid_json", "created_at"]
    list_filter = ["valid_json"]
    raw_id_fields = ["session", "turn"]


@admin.register(TurnContextAudit)
class TurnContextAuditAdmin(admin.ModelAdmin):
    list_display = [
        "turn",
        "model_context_limit",
        "input_budget",
        "estimated_tokens_before",
        "estimated_tokens_after",
        "summary_triggered",
        "pruned",
    ]
    list_filter = ["summary_triggered", "pruned"]
    raw_id_fields = ["turn"]


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    """Clients' Idempotency-Keys and the answers retries get: looked at, never edited."""

    list_display = ["key", "user", "state", "response_status", "turn", "created_at"]
    list_filter = ["state", "response_status"]
    search_fields = ["key", "user__username", "turn__id"]
    list_select_related = ["user", "turn"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
