"""Amounts an operator types come back exactly on SQLite, the laptop default, which stores a
decimal with a fraction as a double (15 significant digits), and Django reads it back so.

A monthly credit cap of 99999999999999.9999999999 fits its column (24 digits, 10 places) and
was taken; SQLite kept it as 1e14, which Django then read as 25 digits and could not turn into
the column's decimal (`decimal.InvalidOperation`): the profile's pages, its user's page and
every API call with the user's token answered 500, and the console could not undo it. Run in a
subprocess, as the suite itself is bound to PostgreSQL.
"""

from pantheon.testing.processes import production_python

SCRIPT = r"""
import json, django
django.setup()
from decimal import Decimal
from django.core.management import call_command
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from usage.models import BillingProfile, ModelAlias, ModelPrice, PricingVersion

results = {}
# A cap saved before the rule, which no read could turn back into a decimal: brought down.
call_command("migrate", "usage", "0013", verbosity=0)
old = User.objects.create_user("old", password="old-pass-123")
BillingProfile.objects.create(user=old, monthly_credit_cap=Decimal("99999999999999.9999999999"))
call_command("migrate", verbosity=0)
results["old cap"] = str(BillingProfile.objects.get(user=old).monthly_credit_cap)

boss = User.objects.create_superuser("boss", password="boss-pass-123")
user = User.objects.create_user("user", password="user-pass-123")
profile = BillingProfile.objects.create(user=user, monthly_credit_cap=Decimal("5"))
console = Client()
console.force_login(boss)
change = f"/admin/usage/billingprofile/{profile.pk}/change/"
changelist = "/admin/usage/billingprofile/"
api = APIClient()
api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")


def pages():
    return [
        console.get(page).status_code
        for page in (changelist, change, f"/admin/auth/user/{user.pk}/change/")
    ] + [api.get("/api/v1/usage").status_code]


refused = console.post(change, {"monthly_credit_cap": "99999999999999.9999999999"})
action = console.post(
    changelist,
    {"action": "set_cap", "_selected_action": [profile.pk], "apply": "1",
     "cap": "99999999999999.999999"},
)
results["refused"] = [refused.status_code, action.status_code, pages()]
results["kept"] = {}
for typed in ("1000000000", "999999999.999999", "123456789.123456", "0.000001", "12.5"):
    saved = console.post(change, {"monthly_credit_cap": typed}).status_code
    read = BillingProfile.objects.get(pk=profile.pk).monthly_credit_cap
    results["kept"][typed] = [saved, read == Decimal(typed), pages()]
results["api cap"] = api.get("/api/v1/usage").json()["credit_cap"]

# Prices and multipliers, at the most their columns take (12 digits, 6 places; 8 digits, 4
# places), are within a double's 15 digits already: exact, no bound needed.
version = PricingVersion.objects.create(name="widest", default_multiplier=Decimal("9999.9999"))
ModelPrice.objects.create(
    pricing_version=version,
    model_alias=ModelAlias.objects.get(alias="deepseek"),
    credit_multiplier=Decimal("9999.9999"),
    input_usd_per_mtok=Decimal("999999.999999"),
    cached_input_usd_per_mtok=Decimal("0.000001"),
    output_usd_per_mtok=Decimal("123456.654321"),
)
price = ModelPrice.objects.select_related("pricing_version").get(pricing_version__name="widest")
results["prices"] = [
    str(value.normalize())
    for value in (
        price.pricing_version.default_multiplier,
        price.credit_multiplier,
        price.input_usd_per_mtok,
        price.cached_input_usd_per_mtok,
        price.output_usd_per_mtok,
    )
]
print(json.dumps(results))
"""


def test_a_cap_is_refused_unless_sqlite_reads_it_back_exactly(tmp_path):
    results = production_python(
        SCRIPT,
        DATABASE_URL=f"sqlite:///{tmp_path / 'laptop.sqlite3'}",
        DEBUG="true",  # the console's pages without collected static files
        ALLOWED_HOSTS="testserver",
        LOG_LEVEL="ERROR",
    )

    assert results["old cap"] == "1000000000.0000000000"
    # Refused (the form again, saying why), and every page of the user still answers.
    assert results["refused"] == [200, 200, [200, 200, 200, 200]]
    assert results["kept"] == {
        typed: [302, True, [200, 200, 200, 200]]
        for typed in ("1000000000", "999999999.999999", "123456789.123456", "0.000001", "12.5")
    }
    assert results["api cap"] == "12.5000000000"
    assert results["prices"] == [
        "9999.9999",
        "9999.9999",
        "999999.999999",
        "0.000001",
        "123456.654321",
    ]
