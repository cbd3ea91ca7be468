"""Rooms in the admin: create and edit through the services, lock, unlock, archive, and staff notices."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext, gettext_lazy
from django.utils.translation import gettext_lazy as _

from .. import services
from ..errors import ChatError
from ..models import Room
from ._common import run_each


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
        run_each(
            self,
            request,
            queryset,
            lambda r: services.room_update(user=request.user, slug=r.slug, locked=True, source="admin"),
            _("%(count)s room(s) locked."),
        )

    @admin.action(description=_("Unlock selected rooms"), permissions=["change"])
    def unlock_rooms(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda r: services.room_update(user=request.user, slug=r.slug, locked=False, source="admin"),
            _("%(count)s room(s) unlocked."),
        )

    @admin.action(description=_("Archive selected rooms"), permissions=["change"])
    def archive_rooms(self, request, queryset):
        run_each(
            self,
            request,
            queryset,
            lambda r: services.room_archive(user=request.user, slug=r.slug, source="admin"),
            _("%(count)s room(s) archived."),
        )
