from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView

from pantheon.schema_view import SchemaView

api_v1 = [
    path("", include("pantheon.api_urls")),
    path("", include("usage.urls")),
    path("", include("sessions_app.urls")),
    path("", include("rooms.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

# JSON under /api/, Django's HTML pages elsewhere (pantheon/error_views.py).
handler400 = "pantheon.error_views.bad_request"
handler403 = "pantheon.error_views.permission_denied"
handler404 = "pantheon.error_views.page_not_found"
handler500 = "pantheon.error_views.server_error"
