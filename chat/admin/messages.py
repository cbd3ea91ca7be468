"""Messages in the admin: a list that stays fast on millions of rows, soft delete and restore."""

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from .. import services, sql, system_text
from ..models import Message
from ._common import ModerationMixin, run_each


class EstimatedCountPaginator(Paginator):
    """On PostgreSQL, the unfiltered message list is counted by the planner's estimate: an
    exact COUNT(*) scans the whole table, which on millions of rows costs every page view."""

    estimate_above = 10_000

    @cached_property
    def count(self):
        if not self.object_list.query.where:
            estimate = sql.estimated_rows(self.object_list.model)
            if estimate is not None and estimate > self.estimate_above:
                return estimate
        return super().count


@admin.register(Message)
class MessageAdmin(ModerationMixin, admin.ModelAdmin):
    paginator = EstimatedCountPaginator
    list_display = ("id", "room", "author", "excerpt", "kind", "deleted", "created_at", "edited_at")
    list_filter = ("room", "deleted", "kind", "created_at")
    search_fields = ("body", "author__username")
    list_select_related = ("room", "author")
    raw_id_fields = ("room", "author")
    ordering = ("-id",)
    show_full_result_count = False  # a COUNT(*) over all messages on every search is too slow
    actions = ("soft_delete", "restore")
    # Written by chat.services.reactions only: the summary of the Reaction rows.
    readonly_fields = ("reactions",)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.kind == Message.Kind.SYSTEM:  # the stored English, and what readers see
            return (*super().get_readonly_fields(request, obj), "shown_as")
        return super().get_readonly_fields(request, obj)

    @admin.display(description=_("body"))
    def excerpt(self, message: Message) -> str:
        return Truncator(self.shown_as(message)).chars(80)

    @admin.display(description=_("shown as"))
    def shown_as(self, message: Message) -> str:
        """The body as readers read it: a system message in the admin's language."""
        return system_text.localize(message.body) if message.kind == Message.Kind.SYSTEM else message.body

    @admin.action(description=_("Delete selected messages (soft)"), permissions=["moderate"])
    def soft_delete(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda m: services.message_delete(user=request.user, message_id=m.pk, source="admin"),
            _("%(count)s message(s) deleted."),
        )

    @admin.action(description=_("Restore selected deleted messages"), permissions=["moderate"])
    def restore(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda m: services.message_restore(user=request.user, message_id=m.pk, source="admin"),
            _("%(count)s message(s) restored."),
        )
