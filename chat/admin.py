"""Moderation in the Django admin.

Every change to chat state goes through `chat.services`, so connected clients see it live
(`room.updated`, `message.deleted`, `room.left`, ...). Fields no service changes are
read-only here, and hard deletes are disabled: rooms are archived, messages soft-deleted,
members removed.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import F
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.text import Truncator
from django.utils.translation import gettext, gettext_lazy
from django.utils.translation import gettext_lazy as _

from . import auth, services, sql, system_text
from .errors import ChatError
from .models import Membership, Message, ModerationAction, Report, Room


def _run_each(modeladmin, request, objects, call, done) -> None:
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


class BanForm(forms.Form):
    reason = forms.CharField(label=_("reason"), max_length=300, required=False)
    minutes = forms.IntegerField(label=_("minutes"), min_value=1, required=False, help_text=_("Empty: until lifted."))


class MuteForm(forms.Form):
    minutes = forms.IntegerField(label=_("minutes"), min_value=1, max_value=525600)


class NoticeForm(forms.Form):
    text = forms.CharField(label=gettext_lazy("Text"), widget=forms.Textarea(attrs={"rows": 3}))
    level = forms.ChoiceField(label=gettext_lazy("Level"), choices=[(level, level) for level in services.NOTICE_LEVELS])
    room = forms.ModelChoiceField(
        label=gettext_lazy("Room"),
        required=False,
        queryset=Room.objects.filter(archived=False).order_by("slug"),
        empty_label=gettext_lazy("Everyone, in every room"),
    )


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    change_list_template = "admin/chat/room/change_list.html"
    list_display = ("slug", "name", "kind", "locked", "archived", "created_by", "created_at")
    list_filter = ("kind", "locked", "archived")
    search_fields = ("slug", "name")
    list_select_related = ("created_by",)
    ordering = ("slug",)
    actions = ("lock_rooms", "unlock_rooms", "archive_rooms")

    def get_urls(self):
        return [
            path("notice/", self.admin_site.admin_view(self.notice_view), name="chat_room_notice"),
            *super().get_urls(),
        ]

    def notice_view(self, request):
        """A staff notice to every open page, or to one room's: `services.notice_send`, nothing stored."""
        if not request.user.is_staff:
            raise PermissionDenied
        form = NoticeForm(request.POST or None)
        if form.is_valid():
            room = form.cleaned_data["room"]
            try:
                services.notice_send(
                    text=form.cleaned_data["text"],
                    level=form.cleaned_data["level"],
                    room=room.slug if room else None,
                    actor=request.user,
                )
            except ChatError as exc:
                form.add_error(None, exc.detail)
            else:
                self.message_user(request, gettext("Notice sent."), messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:chat_room_changelist"))
        return TemplateResponse(
            request,
            "admin/chat/notice_form.html",
            {
                **self.admin_site.each_context(request),
                "title": gettext("Send a notice"),
                "form": form,
                "opts": self.opts,
            },
        )

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("slug", "name", "kind", "topic")
        return ("slug", "name", "kind", "topic", "locked", "archived", "created_by", "created_at")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        if obj.archived:  # an archived room is closed to every service
            return self.get_fields(request, obj)
        return ("slug", "kind", "archived", "created_by", "created_at")

    def formfield_for_choice_field(self, db_field, request, **kwargs):
        if db_field.name == "kind":  # direct rooms are created by messaging a user
            kwargs["choices"] = [(kind.value, kind.label) for kind in (Room.Kind.PUBLIC, Room.Kind.PRIVATE)]
        return super().formfield_for_choice_field(db_field, request, **kwargs)

    def has_delete_permission(self, request, obj=None):
        return False  # archive instead: it closes connections and keeps history

    def save_model(self, request, obj, form, change):
        if change:
            room = services.room_update(
                user=request.user, slug=obj.slug, name=obj.name, topic=obj.topic, locked=obj.locked, source="admin"
            )
        else:
            room = services.room_create(
                user=request.user, name=obj.name, slug=obj.slug, kind=obj.kind, topic=obj.topic, source="admin"
            )
        obj.pk = room.pk  # the admin's log entry and redirect use it

    @admin.action(description=_("Lock selected rooms (read-only)"), permissions=["change"])
    def lock_rooms(self, request, queryset):
        _run_each(
            self,
            request,
            queryset,
            lambda r: services.room_update(user=request.user, slug=r.slug, locked=True, source="admin"),
            _("%(count)s room(s) locked."),
        )

    @admin.action(description=_("Unlock selected rooms"), permissions=["change"])
    def unlock_rooms(self, request, queryset):
        _run_each(
            self,
            request,
            queryset,
            lambda r: services.room_update(user=request.user, slug=r.slug, locked=False, source="admin"),
            _("%(count)s room(s) unlocked."),
        )

    @admin.action(description=_("Archive selected rooms"), permissions=["change"])
    def archive_rooms(self, request, queryset):
        _run_each(
            self,
            request,
            queryset,
            lambda r: services.room_archive(user=request.user, slug=r.slug, source="admin"),
            _("%(count)s room(s) archived."),
        )


@admin.register(Membership)
class MembershipAdmin(ModerationMixin, admin.ModelAdmin):
    list_display = ("room", "user", "role", "banned", "banned_until", "muted_until", "last_read_id", "joined_at")
    list_filter = ("role", "banned")
    search_fields = ("room__slug", "room__name", "user__username")
    list_select_related = ("room", "user")
    raw_id_fields = ("room", "user")
    actions = ("ban_members", "unban_members", "mute_members", "unmute_members", "remove_members")

    def _with_form(self, request, queryset, form_class, action: str, title: str, apply):
        """An action that first asks for its parameters on an intermediate page."""
        form = form_class(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            _run_each(
                self,
                request,
                queryset.select_related("room", "user"),
                lambda m: apply(m, **form.cleaned_data),
                _("%(count)s done."),
            )
            return None
        return TemplateResponse(
            request,
            "admin/chat/sanction_form.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "form": form,
                "action": action,
                "queryset": queryset.select_related("room", "user"),
                "opts": self.opts,
            },
        )

    @admin.action(description=_("Ban selected users from their rooms…"), permissions=["moderate"])
    def ban_members(self, request, queryset):
        return self._with_form(
            request,
            queryset,
            BanForm,
            "ban_members",
            _("Ban"),
            lambda m, reason, minutes: services.member_ban(
                actor=request.user,
                slug=m.room.slug,
                username=m.user.username,
                reason=reason,
                minutes=minutes,
                source="admin",
            ),
        )

    @admin.action(description=_("Lift the bans of selected users"), permissions=["moderate"])
    def unban_members(self, request, queryset):
        _run_each(
            self,
            request,
            queryset.select_related("room", "user"),
            lambda m: services.member_unban(
                actor=request.user, slug=m.room.slug, username=m.user.username, source="admin"
            ),
            _("%(count)s ban(s) lifted."),
        )

    @admin.action(description=_("Mute selected members…"), permissions=["moderate"])
    def mute_members(self, request, queryset):
        return self._with_form(
            request,
            queryset,
            MuteForm,
            "mute_members",
            _("Mute"),
            lambda m, minutes: services.member_mute(
                actor=request.user, slug=m.room.slug, username=m.user.username, minutes=minutes, source="admin"
            ),
        )

    @admin.action(description=_("Unmute selected members"), permissions=["moderate"])
    def unmute_members(self, request, queryset):
        _run_each(
            self,
            request,
            queryset.select_related("room", "user"),
            lambda m: services.member_unmute(
                actor=request.user, slug=m.room.slug, username=m.user.username, source="admin"
            ),
            _("%(count)s member(s) unmuted."),
        )

    @admin.action(description=_("Remove selected members from their rooms"), permissions=["moderate"])
    def remove_members(self, request, queryset):
        _run_each(
            self,
            request,
            queryset.select_related("room", "user"),
            lambda m: services.member_remove(
                actor=request.user, slug=m.room.slug, username=m.user.username, source="admin"
            ),
            _("%(count)s member(s) removed."),
        )


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

    @admin.display(description=_("body"))
    def excerpt(self, message: Message) -> str:
        body = system_text.localize(message.body) if message.kind == Message.Kind.SYSTEM else message.body
        return Truncator(body).chars(80)

    @admin.action(description=_("Delete selected messages (soft)"), permissions=["moderate"])
    def soft_delete(self, request, queryset):
        _run_each(
            self,
            request,
            queryset,
            lambda m: services.message_delete(user=request.user, message_id=m.pk, source="admin"),
            _("%(count)s message(s) deleted."),
        )

    @admin.action(description=_("Restore selected deleted messages"), permissions=["moderate"])
    def restore(self, request, queryset):
        _run_each(
            self,
            request,
            queryset,
            lambda m: services.message_restore(user=request.user, message_id=m.pk, source="admin"),
            _("%(count)s message(s) restored."),
        )


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
        _run_each(
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
        _run_each(
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
        _run_each(
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
        _run_each(
            self,
            request,
            queryset,
            lambda u: services.user_deactivate(actor=request.user, username=u.username, source="admin"),
            _("%(count)s user(s) deactivated."),
        )
