"""What the admin modules share: running a service over the selected objects, and view-only admins."""

from django.contrib import messages
from django.utils.translation import gettext_lazy as _

from ..errors import ChatError


def run_each(modeladmin, request, objects, call, done) -> None:
    """Apply a service to each selected object, reporting successes (`done`, a message naming
    `%(count)s`) and each refusal."""
    count = 0
    for obj in objects:
        try:
            call(obj)
        except ChatError as exc:
            modeladmin.message_user(
                request, _("%(object)s: %(problem)s") % {"object": obj, "problem": exc.detail}, messages.ERROR
            )
        else:
            count += 1
    if count:
        modeladmin.message_user(request, done % {"count": count}, messages.SUCCESS)


class ModerationMixin:
    """A view-only admin whose actions (which call services) need the model's change permission."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_moderate_permission(self, request):
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
