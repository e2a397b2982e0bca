"""The project-wide endpoints: authentication and health."""

from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from pantheon.health import HealthView

urlpatterns = [
    path("auth/token", obtain_auth_token, name="auth-token"),
    path("health", HealthView.as_view(), name="health"),
]
