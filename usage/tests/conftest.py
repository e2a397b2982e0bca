import pytest

from usage.tests.factories import ledger_event


@pytest.fixture
def ledger_row():
    """Write one ledger row as the turn engine does: the row and its user's monthly counter in
    one transaction (`usage.tests.factories.ledger_event`)."""
    return ledger_event
