"""Memberships in the admin: ban, unban, mute, unmute and remove, through the services."""

from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _

from .. import services
from ..models import Membership
from ._common import ModerationMixin, run_each


class BanForm(forms.Form):
    reason = forms.CharField(label=_("reason"), max_length=300, required=False)
    minutes = forms.IntegerField(label=_("minutes"), min_value=1, required=False, help_text=_("Empty: until lifted."))


class MuteForm(forms.Form):
    minutes = forms.IntegerField(label=_("minutes"), min_value=1, max_value=525600)


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
            run_each(
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
        run_each(
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
        run_each(
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
        run_each(
            self,
            request,
            queryset.select_related("room", "user"),
            lambda m: services.member_remove(
                actor=request.user, slug=m.room.slug, username=m.user.username, source="admin"
            ),
            _("%(count)s member(s) removed."),
        )
