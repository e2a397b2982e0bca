"""A monthly credit cap is at most a billion credits, to 6 decimals (`validate_credit_cap`).

A cap above that saved before the rule is brought down to it: on SQLite one near 10^14 could
not be read at all (every page of its user, and each API call with the user's token, was a
500), so the console could not change it. A cap of a billion credits caps no real usage
either; the rows are updated without reading them.
"""

from decimal import Decimal

import django.core.validators
from django.db import migrations, models

import usage.models

# As of this migration (the model's constant may change later).
CREDIT_CAP_MAX = Decimal(1_000_000_000)


def bring_caps_down(apps, schema_editor):
    """Lower caps above a billion credits."""
    profiles = apps.get_model("usage", "BillingProfile").objects.using(
        schema_editor.connection.alias
    )
    profiles.filter(monthly_credit_cap__gt=CREDIT_CAP_MAX).update(monthly_credit_cap=CREDIT_CAP_MAX)


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0013_ledger_labels"),
    ]

    operations = [
        migrations.AlterField(
            model_name="billingprofile",
            name="monthly_credit_cap",
            field=models.DecimalField(
                blank=True,
                decimal_places=10,
                help_text="Empty means no cap.",
                max_digits=24,
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(0),
                    usage.models.validate_credit_cap,
                ],
            ),
        ),
        migrations.RunPython(bring_caps_down, migrations.RunPython.noop, elidable=True),
    ]
