"""The audit log and the report queue in the admin."""

from django.contrib import admin
from django.db.models import F
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from .. import services
from ..models import ModerationAction, Report, Room
from ._common import ModerationMixin, run_each


@admin.register(ModerationAction)
class ModerationActionAdmin(ModerationMixin, admin.ModelAdmin):
    """The audit log: written by the services only, readable here, never editable."""

    list_display = ("created_at", "action", "source", "actor", "room", "target_user", "target_message_id", "reason")
    list_filter = ("action", "source", "created_at")
    search_fields = ("actor__username", "target_user__username")
    list_select_related = ("actor", "room", "target_user")
    show_full_result_count = False
    date_hierarchy = "created_at"


class ResolvedFilter(admin.SimpleListFilter):
    title = _("resolved")
    parameter_name = "resolved"

    def lookups(self, request, model_admin):
        return (("no", _("Open")), ("yes", _("Resolved")))

    def queryset(self, request, queryset):
        if self.value() in ("no", "yes"):
            return queryset.filter(resolved_at__isnull=self.value() == "no")
        return queryset


@admin.register(Report)
class ReportAdmin(ModerationMixin, admin.ModelAdmin):
    """The report queue, open reports first; resolving goes through `services.report_resolve` (audited)."""

    list_display = (
        "id",
        "created_at",
        "room",
        "message_excerpt",
        "message_author",
        "reporter",
        "reason",
        "resolved_at",
        "resolved_by",
    )
    list_filter = (ResolvedFilter, "created_at")
    search_fields = ("reason", "reporter__username", "message__author__username")
    list_select_related = ("message__room", "message__author", "reporter", "resolved_by")
    raw_id_fields = ("message", "reporter", "resolved_by")
    show_full_result_count = False
    actions = ("resolve_dismiss", "resolve_delete_message", "resolve_delete_and_ban")

    def get_ordering(self, request):
        return (F("resolved_at").desc(nulls_first=True), "-id")

    @admin.display(description=_("room"))
    def room(self, report: Report) -> Room:
        return report.message.room

    @admin.display(description=_("message"))
    def message_excerpt(self, report: Report) -> str:
        return Truncator(report.message.body).chars(80)

    @admin.display(description=_("author"))
    def message_author(self, report: Report):
        return report.message.author

    @admin.action(description=_("Resolve: dismiss"), permissions=["moderate"])
    def resolve_dismiss(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda r: services.report_resolve(
                actor=request.user, report_id=r.pk, resolution="dismissed", source="admin"
            ),
            _("%(count)s report(s) dismissed."),
        )

    @admin.action(description=_("Resolve: delete the message"), permissions=["moderate"])
    def resolve_delete_message(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda r: services.report_resolve(
                actor=request.user, report_id=r.pk, resolution="message deleted", delete_message=True, source="admin"
            ),
            _("%(count)s report(s) resolved, message(s) deleted."),
        )

    @admin.action(
        description=_("Resolve: delete the message and ban its author from the room"), permissions=["moderate"]
    )
    def resolve_delete_and_ban(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda r: services.report_resolve(
                actor=request.user,
                report_id=r.pk,
                resolution="message deleted, author banned",
                delete_message=True,
                ban_author=True,
                source="admin",
            ),
            _("%(count)s report(s) resolved, author(s) banned."),
        )
