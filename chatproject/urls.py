from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog, set_language

from chat import throttles
from chat.api.health import healthz, metrics_view

urlpatterns = [
    # Before the admin's own URLs: its login page is throttled like every other.
    path("admin/login/", throttles.throttle_page(throttles.LOGIN)(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/", include("chat.api.urls")),
    # The language switcher posts here (it sets the `django_language` cookie).
    path("i18n/setlang/", set_language, name="set_language"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    # The browser client's strings, in the request's language (gettext, ngettext, interpolate).
    path("jsi18n/", JavaScriptCatalog.as_view(packages=["chat"]), name="javascript-catalog"),
    path("", include("chat.urls")),
]
