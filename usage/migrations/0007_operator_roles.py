"""The operator groups, as the console means them.

- Owner changes configuration (model aliases, price lists and prices, billing profiles, rooms,
  seats, agents), may (softly) delete a session, and only views records (turns, messages,
  summaries, audits, the ledger, rollups, monthly counters) and users.
- Analyst views everything, the billing dashboard and its export included, and changes nothing.

The admin refuses changes to records to everyone anyway; the groups say the same in their
permissions so that an audit of them reads true.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

OPERATED_APPS = ["rooms", "sessions_app", "usage"]
CONFIGURATION = {
    "usage": ["modelalias", "pricingversion", "modelprice", "billingprofile"],
    "rooms": ["room", "roomagent", "agent"],
}
SOFT_DELETED_TOO = [("sessions_app", "session")]
VIEWED_TOO = [("auth", "user")]


def set_roles(apps, schema_editor):
    """Give the roles their permissions."""
    # Permissions of models added since 0002 (MonthlyUsage) exist only after post_migrate;
    # create them now so that a database migrated from zero gets them in its groups.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    operated = Permission.objects.filter(content_type__app_label__in=OPERATED_APPS)
    views = operated.filter(codename__startswith="view_")
    for app_label, model in VIEWED_TOO:
        views = views | Permission.objects.filter(
            content_type__app_label=app_label, codename=f"view_{model}"
        )
    configuration = Permission.objects.none()
    for app_label, models in CONFIGURATION.items():
        configuration = configuration | Permission.objects.filter(
            content_type__app_label=app_label, content_type__model__in=models
        )

    for app_label, model in SOFT_DELETED_TOO:
        configuration = configuration | Permission.objects.filter(
            content_type__app_label=app_label, codename=f"delete_{model}"
        )

    owner, _ = Group.objects.get_or_create(name="Owner")
    owner.permissions.set(views | configuration)
    analyst, _ = Group.objects.get_or_create(name="Analyst")
    analyst.permissions.set(views)


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0006_monthly_usage_and_unpriced_rollups"),
        ("rooms", "0001_initial"),
        ("sessions_app", "0002_add_turn_progress_at"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(set_roles, migrations.RunPython.noop)]
