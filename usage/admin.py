from django.contrib import admin
from django.db import models

from usage.models import (
    USAGE_TOTAL_FIELDS,
    BillingProfile,
    DailyUsageRollup,
    LlmCallEvent,
    ModelAlias,
    ModelPrice,
    MonthlyUsage,
    PricingVersion,
)


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = [
        "alias",
        "litellm_model",
        "api_base",
        "api_key_env",
        "context_window",
        "enabled",
    ]
    list_filter = ["enabled"]
    list_editable = ["enabled"]
    search_fields = ["alias", "litellm_model"]


class ModelPriceInline(admin.TabularInline):
    model = ModelPrice
    extra = 0


@admin.register(PricingVersion)
class PricingVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "default_multiplier", "effective_from", "created_at"]
    inlines = [ModelPriceInline]


@admin.register(LlmCallEvent)
class LlmCallEventAdmin(admin.ModelAdmin):
    """The ledger is append-only: operators read it, nobody edits it here."""

    list_display = [
        "created_at",
        "user",
        "purpose",
        "model_alias",
        "status",
        "input_tokens_fresh",
        "input_tokens_cached",
        "output_tokens",
        "credits",
        "provider_cost_usd",
        "priced",
        "latency_ms",
    ]
    list_filter = ["purpose", "status", "model_alias", "priced", "created_at"]
    search_fields = ["user__username", "session__id", "turn__id", "request_id", "agent_key"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DailyUsageRollup)
class DailyUsageRollupAdmin(admin.ModelAdmin):
    list_display = ["day", "user", "model_alias", *USAGE_TOTAL_FIELDS]
    list_filter = ["model_alias", "day"]
    list_select_related = ["user"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "monthly_credit_cap", "is_suspended", "updated_at"]
    list_filter = ["is_suspended"]
    list_editable = ["monthly_credit_cap", "is_suspended"]
    search_fields = ["user__username"]
    raw_id_fields = ["user"]


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "model_alias",
        "pricing_version",
        "input_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "output_usd_per_mtok",
    ]
    list_filter = ["pricing_version", "model_alias"]
    list_select_related = ["model_alias", "pricing_version"]


@admin.register(MonthlyUsage)
class MonthlyUsageAdmin(admin.ModelAdmin):
    list_display = ["month", "user", "credits", "llm_calls", "updated_at"]
    list_select_related = ["user"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
