"""The one LLM gateway of this process, built from settings, and alias rows → plain config."""

import functools
import os
import re

from django.conf import settings

from orchestration.gateway import LiteLLMGateway
from orchestration.types import AliasConfig
from usage.models import API_KEY_ENV_PATTERN


@functools.cache
def get_gateway() -> LiteLLMGateway:
    return LiteLLMGateway(
        timeout_seconds=settings.PANTHEON_LLM_TIMEOUT_SECONDS,
        max_retries=settings.PANTHEON_LLM_MAX_RETRIES,
        backoff_seconds=settings.PANTHEON_LLM_BACKOFF_SECONDS,
        retry_after_max_seconds=settings.PANTHEON_LLM_RETRY_AFTER_MAX_SECONDS,
        demo=settings.PANTHEON_LLM_BACKEND == "demo",
    )


def alias_config(alias) -> AliasConfig:
    """A ModelAlias row as the gateway's plain config; the key is read from its env var now,
    without blanks around it: a key has none, and a secret mounted from a file keeps the
    file's last newline, a header the HTTP client refuses to send (each call then failed as
    the provider's error, and was retried). A variable of blanks alone is one not set."""
    api_key = None
    if alias.api_key_env and re.fullmatch(API_KEY_ENV_PATTERN, alias.api_key_env):
        api_key = os.environ.get(alias.api_key_env, "").strip() or None
    return AliasConfig(
        alias=alias.alias,
        litellm_model=alias.litellm_model,
        api_base=alias.api_base or None,
        api_key=api_key,
        # Named but unset, or not a variable's name at all (the alias's page refuses one).
        missing_key=alias.api_key_env if alias.api_key_env and api_key is None else None,
        context_window=alias.context_window,
        max_output_tokens=alias.max_output_tokens,
    )
