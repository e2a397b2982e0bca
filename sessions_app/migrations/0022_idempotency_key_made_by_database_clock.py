"""An Idempotency-Key's `created_at` is the database's clock by default (`statement_timestamp()`),
as the turn that claims one stamps it (`TurnState.now`): its lifetime, promised for
`PANTHEON_IDEMPOTENCY_KEY_HOURS` and pruned by `prune_idempotency_keys`, is counted by one
clock, not by whichever host made the key and whichever prunes it. A catalog change only: the
column's default is set, no row is rewritten."""

from django.db import migrations, models
from django.db.models.functions import Now


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0021_session_user_alive"),
    ]

    operations = [
        migrations.AlterField(
            model_name="idempotencykey",
            name="created_at",
            field=models.DateTimeField(db_default=Now()),
        ),
    ]
