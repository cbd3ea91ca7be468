from django.contrib import admin
from django.urls import include, path

from chat.api.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("chat.api.urls")),
    path("healthz", healthz, name="healthz"),
    path("", include("chat.urls")),
]
