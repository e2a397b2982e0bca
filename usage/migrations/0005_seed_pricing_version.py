"""Seed a price list for the seeded aliases, so the demo's calls are priced, never a silent $0.

USD per million tokens from litellm's local cost map (litellm 1.106.2,
LITELLM_LOCAL_MODEL_COST_MAP=True), read once when this migration was written; the map has no
`openrouter/...` entries, so each alias takes the entry of the same model at the nearest
provider (the key is noted per row). The migration does not import litellm: prices must not move
when litellm is upgraded. Cached input left empty is charged as fresh input.

Credits: the cheap aliases use the list's default multiplier (x1); `premium` burns five times
the credits for the same tokens.
"""

from datetime import UTC, datetime
from decimal import Decimal

from django.db import migrations

VERSION_NAME = "2026-11 list"
EFFECTIVE_FROM = datetime(2026, 11, 1, tzinfo=UTC)
DEFAULT_MULTIPLIER = Decimal("1.0")

# alias: (input, cached input, output) in USD per million tokens, credit multiplier
PRICES = {
    # deepseek/deepseek-chat
    "deepseek": (Decimal("0.28"), Decimal("0.028"), Decimal("0.42"), None),
    # deepinfra/meta-llama/Llama-3.3-70B-Instruct
    "llama": (Decimal("0.23"), None, Decimal("0.40"), None),
    # deepinfra/Qwen/Qwen2.5-72B-Instruct
    "qwen": (Decimal("0.36"), None, Decimal("0.40"), None),
    # deepinfra/openai/gpt-oss-120b
    "gpt_oss": (Decimal("0.037"), None, Decimal("0.17"), None),
    # vercel_ai_gateway/anthropic/claude-sonnet-4 (OpenRouter's anthropic/claude-sonnet-4)
    "premium": (Decimal("3.00"), Decimal("0.30"), Decimal("15.00"), Decimal("5.0")),
}


def seed_price_list(apps, schema_editor):
    """Add the 2026-11 price list."""
    PricingVersion = apps.get_model("usage", "PricingVersion")
    ModelPrice = apps.get_model("usage", "ModelPrice")
    ModelAlias = apps.get_model("usage", "ModelAlias")
    version, _ = PricingVersion.objects.get_or_create(
        name=VERSION_NAME,
        defaults={"effective_from": EFFECTIVE_FROM, "default_multiplier": DEFAULT_MULTIPLIER},
    )
    aliases = {row.alias: row for row in ModelAlias.objects.filter(alias__in=PRICES)}
    for alias, (fresh, cached, output, multiplier) in PRICES.items():
        if alias not in aliases:  # renamed or removed by an operator before this ran
            continue
        ModelPrice.objects.get_or_create(
            pricing_version=version,
            model_alias=aliases[alias],
            defaults={
                "input_usd_per_mtok": fresh,
                "cached_input_usd_per_mtok": cached,
                "output_usd_per_mtok": output,
                "credit_multiplier": multiplier,
            },
        )


def remove_price_list(apps, schema_editor):
    """Remove the 2026-11 list, if unused."""
    PricingVersion = apps.get_model("usage", "PricingVersion")
    LlmCallEvent = apps.get_model("usage", "LlmCallEvent")
    version = PricingVersion.objects.filter(name=VERSION_NAME).first()
    if version is not None and not LlmCallEvent.objects.filter(pricing_version=version).exists():
        version.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0004_pricing_credit_multipliers"),
    ]

    operations = [migrations.RunPython(seed_price_list, remove_price_list)]
