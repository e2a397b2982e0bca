"""The project-wide endpoints: authentication and health."""

from django.urls import path

from pantheon.auth_token import ChangePasswordView, ObtainTokenView, RotateTokenView
from pantheon.health import HealthView

urlpatterns = [
    path("auth/token", ObtainTokenView.as_view(), name="auth-token"),
    path("auth/token/rotate", RotateTokenView.as_view(), name="auth-token-rotate"),
    path("auth/password", ChangePasswordView.as_view(), name="auth-password"),
    path("health", HealthView.as_view(), name="health"),
]
