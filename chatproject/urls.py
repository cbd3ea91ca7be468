from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog, set_language

from chat import throttles
from chat.api.views import healthz, metrics_view

urlpatterns = [
    # Before the admin's own URLs: its login page is throttled like every other.
    path("admin/login/", throttles.throttle_page(throttles.LOGIN)(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/", include("chat.api.urls")),
    # The language switcher posts here; the browser client's strings come from the catalogue.
    path("i18n/setlang/", set_language, name="set_language"),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("chat.urls")),
]
