from datetime import timedelta

from django.db import migrations, models


def spread_tied_starts(apps, schema_editor):
    """Lists that start at one moment (the console's copy of several lists made them) are set a
    microsecond apart, in the order they were created, so that the constraint can hold: the
    first keeps its start."""
    PricingVersion = apps.get_model("usage", "PricingVersion")
    taken = set()
    for version in PricingVersion.objects.order_by("effective_from", "created_at", "pk"):
        start = version.effective_from
        while start in taken:
            start += timedelta(microseconds=1)
        if start != version.effective_from:
            PricingVersion.objects.filter(pk=version.pk).update(effective_from=start)
        taken.add(start)


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0015_ledger_lost_call_answered_late"),
    ]

    operations = [
        migrations.RunPython(spread_tied_starts, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="pricingversion",
            constraint=models.UniqueConstraint(
                fields=("effective_from",), name="one_price_list_per_start"
            ),
        ),
    ]
