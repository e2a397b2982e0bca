from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView

from pantheon import api_urls
from pantheon.schema_view import SchemaView
from rooms import urls as rooms_urls
from sessions_app import urls as sessions_urls
from usage import urls as usage_urls

# The API's routes in one list, each app's in the order its module gives them: an include with
# an empty prefix per app made every request go into each app before its own and out again (a
# Resolver404 raised and caught, the routes it tried copied), half the CPU of resolving a path.
api_v1 = [
    *api_urls.urlpatterns,
    *usage_urls.urlpatterns,
    *sessions_urls.urlpatterns,
    *rooms_urls.urlpatterns,
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
