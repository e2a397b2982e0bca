from django.urls import path

from usage import api

urlpatterns = [
    path("models", api.ModelListView.as_view(), name="models"),
    path("usage", api.UsageView.as_view(), name="usage"),
]
