"""Drop the foreign keys' own indexes that another index of their table starts with (each
served by the one named beside it), concurrently: pantheon/migration_indexes.py."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from pantheon.migration_indexes import drop_foreign_key_indexes

# (index, table, column, the index that serves its reads): the first is Django's name for the
# foreign key's own index.
INDEXES = [
    (
        "usage_llmcallevent_session_id_138eaf0c",
        "usage_llmcallevent",
        "session_id",
        "llmcall_session_created",
    ),
    ("usage_llmcallevent_turn_id_b2fd07e1", "usage_llmcallevent", "turn_id", "llmcall_turn"),
    (
        "usage_llmcallevent_user_id_33c0083e",
        "usage_llmcallevent",
        "user_id",
        "llmcall_user_created",
    ),
    (
        "usage_modelprice_pricing_version_id_3d1def4b",
        "usage_modelprice",
        "pricing_version_id",
        "model_price_unique_per_version",
    ),
    (
        "usage_monthlyusage_user_id_dbd7850c",
        "usage_monthlyusage",
        "user_id",
        "monthly_usage_unique",
    ),
]


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY runs outside a transaction

    dependencies = [
        ("usage", "0021_ledger_cancelled_call_billed"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="llmcallevent",
                    name="session",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="sessions_app.session",
                    ),
                ),
                migrations.AlterField(
                    model_name="llmcallevent",
                    name="turn",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="llm_call_events",
                        to="sessions_app.turn",
                    ),
                ),
                migrations.AlterField(
                    model_name="llmcallevent",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="llm_call_events",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="modelprice",
                    name="pricing_version",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="prices",
                        to="usage.pricingversion",
                    ),
                ),
                migrations.AlterField(
                    model_name="monthlyusage",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="monthly_usage",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[drop_foreign_key_indexes(INDEXES)],
        )
    ]
