from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from django.db.models import Count, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from usage.models import BillingProfile, LlmCallEvent, ModelAlias, ModelPrice, PricingVersion


def model_aliases_enabled() -> QuerySet[ModelAlias]:
    return ModelAlias.objects.filter(enabled=True).order_by("alias")


def model_alias_enabled(alias: str) -> bool:
    return ModelAlias.objects.filter(alias=alias, enabled=True).exists()


def pricing_version_active(*, at: datetime | None = None) -> QuerySet[PricingVersion]:
    """The newest price list already in effect at `at` (a one-row queryset, maybe empty)."""
    at = at or timezone.now()
    return PricingVersion.objects.filter(effective_from__lte=at).order_by("-effective_from")[:1]


@dataclass(frozen=True)
class AliasPricing:
    """An alias with everything a metered call needs: config, active multiplier and prices."""

    alias: ModelAlias
    pricing_version_id: UUID | None
    multiplier: Decimal | None
    input_usd_per_mtok: Decimal | None
    cached_input_usd_per_mtok: Decimal | None
    output_usd_per_mtok: Decimal | None

    @property
    def has_price(self) -> bool:
        return self.input_usd_per_mtok is not None and self.output_usd_per_mtok is not None


def alias_pricing(*, aliases: Iterable[str]) -> dict[str, AliasPricing]:
    """The named aliases with the active pricing, in one query."""
    active = pricing_version_active()
    price = ModelPrice.objects.filter(
        model_alias=OuterRef("pk"), pricing_version=Subquery(active.values("pk"))
    )
    rows = ModelAlias.objects.filter(alias__in=set(aliases)).annotate(
        active_version_id=Subquery(active.values("pk")),
        active_multiplier=Subquery(active.values("multiplier")),
        price_input=Subquery(price.values("input_usd_per_mtok")[:1]),
        price_cached=Subquery(price.values("cached_input_usd_per_mtok")[:1]),
        price_output=Subquery(price.values("output_usd_per_mtok")[:1]),
    )
    return {
        row.alias: AliasPricing(
            alias=row,
            pricing_version_id=row.active_version_id,
            multiplier=row.active_multiplier,
            input_usd_per_mtok=row.price_input,
            cached_input_usd_per_mtok=row.price_cached,
            output_usd_per_mtok=row.price_output,
        )
        for row in rows
    }


def month_start(at: datetime | None = None) -> datetime:
    at = (at or timezone.now()).astimezone(UTC)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(at: datetime | None = None) -> datetime:
    start = month_start(at)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def credits_used(*, user, since: datetime, until: datetime | None = None) -> Decimal:
    events = LlmCallEvent.objects.filter(user=user, created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    total = events.aggregate(total=Sum("credits"))["total"]
    return total or Decimal("0")


def billing_profile_for(*, user) -> BillingProfile | None:
    return BillingProfile.objects.filter(user=user).first()


def usage_by_model(*, user, since: datetime, until: datetime) -> list[dict]:
    zero = Decimal("0")
    rows = (
        LlmCallEvent.objects.filter(user=user, created_at__gte=since, created_at__lt=until)
        .values("model_alias")
        .annotate(
            llm_calls=Count("id"),
            input_fresh=Coalesce(Sum("input_tokens_fresh"), 0),
            input_cached=Coalesce(Sum("input_tokens_cached"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
            credits=Coalesce(Sum("credits"), zero),
            provider_cost_usd=Coalesce(Sum("provider_cost_usd"), zero),
        )
        .order_by("model_alias")
    )
    return [
        {
            "model_alias": row["model_alias"],
            "llm_calls": row["llm_calls"],
            "input_tokens": row["input_fresh"] + row["input_cached"],
            "output_tokens": row["output_tokens"],
            "credits": row["credits"],
            "provider_cost_usd": row["provider_cost_usd"],
        }
        for row in rows
    ]
