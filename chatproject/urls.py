from django.contrib import admin
from django.urls import include, path

from chat.api.views import healthz, metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("chat.api.urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("chat.urls")),
]
