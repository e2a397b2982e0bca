"""Drop the foreign keys' own indexes that another index of their table starts with (each
served by the one named beside it), concurrently: pantheon/migration_indexes.py."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from pantheon.migration_indexes import drop_foreign_key_indexes

# (index, table, column, the index that serves its reads): the first is Django's name for the
# foreign key's own index.
INDEXES = [
    ("rooms_agent_owner_id_746d4a47", "rooms_agent", "owner_id", "agent_key_unique_per_owner"),
    ("rooms_room_owner_id_13734245", "rooms_room", "owner_id", "room_owner_created"),
    ("rooms_roomagent_room_id_cd174cb2", "rooms_roomagent", "room_id", "room_position_unique"),
]


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY runs outside a transaction

    dependencies = [
        ("rooms", "0002_agent_model_alias_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="agent",
                    name="owner",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="agents",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="room",
                    name="owner",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="rooms",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="roomagent",
                    name="room",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="seats",
                        to="rooms.room",
                    ),
                ),
            ],
            database_operations=[drop_foreign_key_indexes(INDEXES)],
        )
    ]
