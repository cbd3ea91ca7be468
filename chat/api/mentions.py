"""REST mentions: the caller's membership of a room with its notify setting, and the mentions
inbox (PROTOCOL.md, Version 2).

Kept apart from `views` (already long): the same thin shape, parse -> one service or selector ->
serialize.
"""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import selectors, services
from chat.models import MAX_ID, Membership
from chat.serializers import MessageSerializer, message_data

from .views import HISTORY_MAX, validated

MembershipState = inline_serializer(
    "MembershipState",
    {
        "role": serializers.ChoiceField(choices=Membership.Role.choices),
        "notify": serializers.ChoiceField(choices=Membership.Notify.choices, help_text="The effective setting."),
        "last_read_id": serializers.IntegerField(),
        "unread": serializers.IntegerField(),
        "mentions": serializers.IntegerField(help_text="Unread messages that mention you."),
    },
)


class NotifySerializer(serializers.Serializer):
    notify = serializers.ChoiceField(choices=Membership.Notify.values)


def membership_state(membership: Membership) -> dict:
    unread, mentions = selectors.unread_counts(membership)
    return {
        "role": membership.role,
        "notify": membership.effective_notify,
        "last_read_id": membership.last_read_id,
        "unread": unread,
        "mentions": mentions,
    }


class MembershipView(APIView):
    @extend_schema(responses=MembershipState)
    def get(self, request, slug):
        """The caller's membership of the room; members only."""
        _room, membership = selectors.member_room_for_user(request.user, slug)
        return Response(membership_state(membership))

    @extend_schema(request=NotifySerializer, responses=MembershipState)
    def patch(self, request, slug):
        """Set `notify`: `all` (every message), `mentions` or `none`."""
        notify = validated(NotifySerializer, request.data)["notify"]
        membership = services.membership_notify_set(user=request.user, slug=slug, notify=notify)
        return Response(membership_state(membership))


class MentionsQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False, help_text="Message id, exclusive.")
    limit = serializers.IntegerField(min_value=1, max_value=HISTORY_MAX, default=50)


class MentionsView(APIView):
    @extend_schema(
        parameters=[MentionsQuerySerializer],
        responses=inline_serializer(
            "MentionsPage", {"results": MessageSerializer(many=True), "has_more": serializers.BooleanField()}
        ),
    )
    def get(self, request):
        """Messages that mention the caller (by name, or `@room`) in the rooms they are a member of,
        ascending by id: the newest page, or the one before `before`. Their own and deleted ones are left out."""
        query = validated(MentionsQuerySerializer, request.query_params)
        messages, has_more = selectors.mentions_for_user(request.user, **query)
        return Response({"results": [message_data(m) for m in messages], "has_more": has_more})
