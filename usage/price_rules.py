"""What a price must be beyond its columns' own rules (each figure at least 0), said once for
every door that sets one: `set_model_price` (`usage.services.model_price_set`) and the
console's price pages (`ModelPrice.clean`)."""

from decimal import Decimal

from pantheon.figures import plain_amount


def cached_input_refusal(*, input_usd: Decimal | None, cached_input_usd: Decimal | None) -> str:
    """Why this cached-input price cannot go with this input price ('' when it can). A cached
    token costs a fraction of a fresh one at every provider, so a cached price above the fresh
    one is a typo (5 for 0.5, the two figures swapped), and would bill cache hits above misses."""
    if input_usd is None or cached_input_usd is None or cached_input_usd <= input_usd:
        return ""
    return (
        f"the cached-input price (${plain_amount(cached_input_usd)}/M) is above the input price "
        f"(${plain_amount(input_usd)}/M): a cached token costs a fraction of a fresh one"
    )
