"""The project-wide endpoints: authentication and health."""

from django.urls import path

from pantheon.auth_token import ObtainTokenView
from pantheon.health import HealthView

urlpatterns = [
    path("auth/token", ObtainTokenView.as_view(), name="auth-token"),
    path("health", HealthView.as_view(), name="health"),
]
