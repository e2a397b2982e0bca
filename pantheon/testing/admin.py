"""For tests of the operator console: a logged-in client and the admin's URLs by model."""

from django.test import Client
from django.urls import reverse


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def admin_url(model, view: str, *args) -> str:
    """`admin_url(Turn, "change", turn.pk)`: the admin page `view` of `model`."""
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)
