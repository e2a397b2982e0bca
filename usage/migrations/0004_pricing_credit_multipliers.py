from decimal import Decimal

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    """A price list's multiplier becomes its default; each alias may carry its own."""

    dependencies = [
        ("usage", "0003_restrict_api_key_env"),
    ]

    operations = [
        migrations.RenameField(
            model_name="pricingversion", old_name="multiplier", new_name="default_multiplier"
        ),
        migrations.AlterField(
            model_name="pricingversion",
            name="default_multiplier",
            field=models.DecimalField(
                decimal_places=4,
                default=Decimal("1.0"),
                help_text="Credits multiplier of aliases without one of their own (floored at 0.5).",
                max_digits=8,
                validators=[django.core.validators.MinValueValidator(0)],
            ),
        ),
        migrations.AddField(
            model_name="modelprice",
            name="credit_multiplier",
            field=models.DecimalField(
                blank=True,
                decimal_places=4,
                help_text="Empty: the price list's default multiplier. Floored at 0.5 either way.",
                max_digits=8,
                null=True,
                validators=[django.core.validators.MinValueValidator(0)],
            ),
        ),
        migrations.AlterField(
            model_name="modelprice",
            name="input_usd_per_mtok",
            field=models.DecimalField(
                decimal_places=6,
                max_digits=12,
                validators=[django.core.validators.MinValueValidator(0)],
                verbose_name="input (USD / M tokens)",
            ),
        ),
        migrations.AlterField(
            model_name="modelprice",
            name="cached_input_usd_per_mtok",
            field=models.DecimalField(
                blank=True,
                decimal_places=6,
                help_text="Empty: cached input is charged as fresh input.",
                max_digits=12,
                null=True,
                validators=[django.core.validators.MinValueValidator(0)],
                verbose_name="cached input (USD / M tokens)",
            ),
        ),
        migrations.AlterField(
            model_name="modelprice",
            name="output_usd_per_mtok",
            field=models.DecimalField(
                decimal_places=6,
                max_digits=12,
                validators=[django.core.validators.MinValueValidator(0)],
                verbose_name="output (USD / M tokens)",
            ),
        ),
    ]
