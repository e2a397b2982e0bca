"""System checks on the rows an operator set: `manage.py check` names what needs their hand."""

from django.core.checks import Warning as CheckWarning
from django.db import DatabaseError


def check_aliases_hold_no_credential(app_configs=None, **kwargs):
    """An alias saved with a credential in its `api_base` before such URLs were refused
    (`usage.models.refuse_credentials_in_url`, migration 0023) kept it, with no word: every
    operator who may view aliases still read the key, and provider errors still quoted it.
    Each such alias is named, never its URL; a database `check` cannot read (none, not
    migrated) is left alone."""
    from usage.models import ModelAlias, credential_in_url

    try:
        bases = list(ModelAlias.objects.exclude(api_base="").values_list("alias", "api_base"))
    except DatabaseError:
        return []
    return [
        CheckWarning(
            f"The model alias {alias!r} holds a credential in its api_base ({where}), saved "
            "before such URLs were refused: every operator who may view aliases reads it, and "
            "provider errors quote it in the log.",
            hint="Put the key in an environment variable ending in _API_KEY and set the alias "
            f"to it with a URL without the key: `manage.py set_model_alias {alias} --api-base "
            "URL --api-key-env NAME_API_KEY` (then rotate the key: it was shown).",
            id="usage.W001",
        )
        for alias, api_base in bases
        if (where := credential_in_url(api_base)) is not None
    ]
