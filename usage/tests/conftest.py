from decimal import Decimal

import pytest
from django.utils import timezone

from usage.models import ModelAlias, ModelPrice, PricingVersion
from usage.tests.factories import ledger_event


@pytest.fixture
def ledger_row():
    """Write one ledger row as the turn engine does: the row and its user's monthly counter in
    one transaction (`usage.tests.factories.ledger_event`)."""
    return ledger_event


@pytest.fixture
def spare_list():
    """A price list no ledger row is stamped with (so editable), with a price for `scratch`."""
    version = PricingVersion.objects.create(name="spare", effective_from=timezone.now())
    scratch = ModelAlias.objects.create(alias="scratch", litellm_model="openai/scratch")
    ModelPrice.objects.create(
        pricing_version=version,
        model_alias=scratch,
        input_usd_per_mtok=Decimal("1"),
        output_usd_per_mtok=Decimal("2"),
    )
    return version
