"""An alias's api_base holds no credential (user:password@, a key in its query): no SQL."""

from django.db import migrations, models

import usage.models


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0022_redundant_fk_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="modelalias",
            name="api_base",
            field=models.URLField(blank=True, validators=[usage.models.refuse_credentials_in_url]),
        ),
    ]
