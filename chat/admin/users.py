"""Users in the admin: deactivating and setting a password end the user's sessions and sockets too."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.utils.translation import gettext_lazy as _

from .. import auth, services
from ._common import run_each

admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class ChatUserAdmin(UserAdmin):
    actions = ("deactivate",)

    def save_model(self, request, obj, form, change):
        """Unticking "active" deactivates through the service, so the user's sockets close too."""
        deactivating = change and "is_active" in form.changed_data and not obj.is_active
        if deactivating:
            obj.is_active = True
        super().save_model(request, obj, form, change)
        if deactivating:
            services.user_deactivate(actor=request.user, username=obj.username, source="admin")

    def user_change_password(self, request, id, form_url=""):
        """Setting a password here ends the user's other sign-ins too, as the user's own change does."""
        keep = auth.session_mark(request.session.session_key) if str(request.user.pk) == str(id) else None
        response = super().user_change_password(request, id, form_url)
        # Saved: a redirect to the user's page (a redirect back to this form saved nothing).
        if request.method == "POST" and response.status_code == 302 and response.url != request.get_full_path():
            services.sign_ins_end(user=get_user_model().objects.get(pk=id), keep_session=keep)
        return response

    @admin.action(description=_("Deactivate selected users (their sockets close at once)"), permissions=["change"])
    def deactivate(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda u: services.user_deactivate(actor=request.user, username=u.username, source="admin"),
            _("%(count)s user(s) deactivated."),
        )
