"""Usage writes: model aliases now; the metered ledger lands with the turn engine."""

from usage.models import ModelAlias


def model_alias_set(
    *,
    alias: str,
    litellm_model: str | None = None,
    api_base: str | None = None,
    api_key_env: str | None = None,
    context_window: int | None = None,
    enabled: bool | None = None,
) -> tuple[ModelAlias, bool]:
    """Create or update an alias; only the fields given change. Returns (alias, created)."""
    changes = {
        "litellm_model": litellm_model,
        "api_base": api_base,
        "api_key_env": api_key_env,
        "context_window": context_window,
        "enabled": enabled,
    }
    changes = {field: value for field, value in changes.items() if value is not None}
    row = ModelAlias.objects.filter(alias=alias).first()
    created = row is None
    if created:
        if not changes.get("litellm_model"):
            raise ValueError(f"Alias {alias!r} does not exist yet: --model is required.")
        row = ModelAlias(alias=alias)
    for field, value in changes.items():
        setattr(row, field, value)
    row.full_clean()
    row.save()
    return row, created
