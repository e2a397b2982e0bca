"""A streamed answer's saves append chunks (`TurnStreamChunk`) instead of rewriting its whole
text in one row (`TurnStream`): the WAL a save wrote grew with the text, so a long answer's
grew with its square. The text of a turn streaming while this runs is not carried over: its
followers on other hosts see its next words only (its step's commit stores the message)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0019_session_activity_backfill"),
    ]

    operations = [
        migrations.CreateModel(
            name="TurnStreamChunk",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "turn",
                        "sequence",
                        "start",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("sequence", models.PositiveIntegerField()),
                ("start", models.PositiveIntegerField()),
                ("text", models.TextField()),
                (
                    "turn",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="sessions_app.turn",
                    ),
                ),
            ],
        ),
        migrations.DeleteModel(
            name="TurnStream",
        ),
    ]
