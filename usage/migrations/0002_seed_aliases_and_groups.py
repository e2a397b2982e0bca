"""Seed the model aliases agents start with, and the operator groups.

Aliases point at hosted models through OpenRouter; operators repoint them with
`manage.py set_model_alias` or the admin. The demo backend ignores the target model.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ALIASES = [
    ("deepseek", "openrouter/deepseek/deepseek-chat", 64_000, 2048),
    ("llama", "openrouter/meta-llama/llama-3.3-70b-instruct", 131_072, 2048),
    ("qwen", "openrouter/qwen/qwen-2.5-72b-instruct", 32_768, 2048),
    ("gpt_oss", "openrouter/openai/gpt-oss-120b", 131_072, 4096),
    ("premium", "openrouter/anthropic/claude-sonnet-4", 200_000, 4096),
]

OPERATED_APPS = ["rooms", "sessions_app", "usage"]


def seed_aliases(apps, schema_editor):
    """Add the five first model aliases."""
    ModelAlias = apps.get_model("usage", "ModelAlias")
    for alias, model, window, max_output in ALIASES:
        ModelAlias.objects.get_or_create(
            alias=alias,
            defaults={
                "litellm_model": model,
                "api_key_env": "OPENROUTER_API_KEY",
                "context_window": window,
                "max_output_tokens": max_output,
                "enabled": True,
            },
        )


def seed_groups(apps, schema_editor):
    """Create the Owner and Analyst roles."""
    # Permissions are normally created after all migrations ran; create them now so that the
    # groups get them on a database migrated from zero.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    operated = Permission.objects.filter(content_type__app_label__in=OPERATED_APPS)
    owner, _ = Group.objects.get_or_create(name="Owner")
    owner.permissions.set(operated)
    analyst, _ = Group.objects.get_or_create(name="Analyst")
    analyst.permissions.set(operated.filter(codename__startswith="view_"))


# Permissions the groups get from these migrations beyond the operated apps' (0007).
ALSO_GIVEN = [("auth", "view_user")]


def remove_groups(apps, schema_editor):
    """Remove the roles (members too): the groups go with the apps they are the roles of (a database migrated to
    zero kept them, holding permissions of tables no longer there), their members' membership
    with them. A group of the same name holding any permission these migrations never give (an
    operator's own group, or one an operator extended) is left alone."""
    Group = apps.get_model("auth", "Group")
    for group in Group.objects.filter(name__in=["Owner", "Analyst"]):
        others = group.permissions.exclude(content_type__app_label__in=OPERATED_APPS)
        for app_label, codename in ALSO_GIVEN:
            others = others.exclude(content_type__app_label=app_label, codename=codename)
        if not others.exists():
            group.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0001_initial"),
        ("rooms", "0001_initial"),
        ("sessions_app", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(seed_aliases, migrations.RunPython.noop),
        migrations.RunPython(seed_groups, remove_groups),
    ]
