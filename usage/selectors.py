from usage.models import ModelAlias


def model_aliases_enabled():
    return ModelAlias.objects.filter(enabled=True).order_by("alias")


def model_alias_enabled(alias: str) -> bool:
    return ModelAlias.objects.filter(alias=alias, enabled=True).exists()
