from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import SimpleRouter

from pantheon.health import HealthView
from rooms.api import AgentViewSet, RoomViewSet
from sessions_app.urls import urlpatterns as session_urls
from usage.urls import urlpatterns as usage_urls

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("agents", AgentViewSet, basename="agent")
router.register("rooms", RoomViewSet, basename="room")

api_v1 = [
    path("auth/token", obtain_auth_token, name="auth-token"),
    path("health", HealthView.as_view(), name="health"),
    *usage_urls,
    *session_urls,
    *router.urls,
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
