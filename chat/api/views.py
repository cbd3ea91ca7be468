"""The REST API: thin views that parse input, call one service or selector, and serialize.

Access rules live in `chat.selectors.room_for_user` and the services; a `ChatError` they
raise becomes `{"detail", "code"}` with its status in `chat.api.errors`. Sign-up, tokens and
the password are in `accounts`, the health check and metrics in `health`; threads and mentions
have modules of their own.
"""

import logging

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import export, selectors, services
from chat.models import MAX_ID
from chat.realtime import presence
from chat.serializers import (
    BanSerializer,
    InviteSerializer,
    MemberSerializer,
    MessageEditSerializer,
    MessagePageSerializer,
    MessageSendSerializer,
    MessageSerializer,
    MuteSerializer,
    ReactionInputSerializer,
    ReadSerializer,
    RoomCreateSerializer,
    RoomSerializer,
    RoomUpdateSerializer,
    SanctionSerializer,
    UserSerializer,
    message_data,
)

logger = logging.getLogger(__name__)

HISTORY_MAX = 200

NO_CONTENT = {204: OpenApiResponse(description="Done.")}


def validated(serializer_class, data) -> dict:
    """Validated input; a field error is a 400 that names the field."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def room_response(user, room, status_code=status.HTTP_200_OK) -> Response:
    """The room with the caller's `member`, `role`, `unread` and `last_message_id`."""
    return Response(RoomSerializer(selectors.room_state(user, room)).data, status=status_code)


def with_online(memberships: list) -> list:
    """Set `online` on each membership, with one presence lookup for the whole list."""
    online = presence.online_user_ids({m.user_id for m in memberships})
    for m in memberships:
        m.online = m.user_id in online
    return memberships


# Rooms


class RoomListView(APIView):
    @extend_schema(responses=RoomSerializer(many=True))
    def get(self, request):
        return Response(RoomSerializer(selectors.rooms_for_user(request.user), many=True).data)

    @extend_schema(request=RoomCreateSerializer, responses={201: RoomSerializer})
    def post(self, request):
        room = services.room_create(user=request.user, **validated(RoomCreateSerializer, request.data))
        return room_response(request.user, room, status.HTTP_201_CREATED)


class RoomDetailView(APIView):
    @extend_schema(responses=RoomSerializer)
    def get(self, request, slug):
        room, _ = selectors.room_for_user(request.user, slug)
        return room_response(request.user, room)

    @extend_schema(request=RoomUpdateSerializer, responses=RoomSerializer)
    def patch(self, request, slug):
        room = services.room_update(user=request.user, slug=slug, **validated(RoomUpdateSerializer, request.data))
        return room_response(request.user, room)

    @extend_schema(responses=NO_CONTENT)
    def delete(self, request, slug):
        services.room_archive(user=request.user, slug=slug)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RoomJoinView(APIView):
    @extend_schema(request=None, responses={200: RoomSerializer, 201: RoomSerializer})
    def post(self, request, slug):
        """201 when this made the caller a member, 200 when they already were."""
        room, _, created = services.room_join(user=request.user, slug=slug)
        return room_response(request.user, room, status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class RoomLeaveView(APIView):
    @extend_schema(request=None, responses=NO_CONTENT)
    def post(self, request, slug):
        services.room_leave(user=request.user, slug=slug)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberListView(APIView):
    @extend_schema(responses=MemberSerializer(many=True))
    def get(self, request, slug):
        room, _ = selectors.room_for_user(request.user, slug)
        return Response(MemberSerializer(with_online(selectors.room_members(room)), many=True).data)

    @extend_schema(request=InviteSerializer, responses={201: MemberSerializer})
    def post(self, request, slug):
        membership = services.member_invite(actor=request.user, slug=slug, **validated(InviteSerializer, request.data))
        return Response(MemberSerializer(with_online([membership])[0]).data, status=status.HTTP_201_CREATED)


class MemberDetailView(APIView):
    @extend_schema(responses=NO_CONTENT)
    def delete(self, request, slug, username):
        services.member_remove(actor=request.user, slug=slug, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BanListView(APIView):
    @extend_schema(request=BanSerializer, responses={201: SanctionSerializer})
    def post(self, request, slug):
        """Ban a user (owner, moderators, staff); without `minutes`, until lifted."""
        membership = services.member_ban(actor=request.user, slug=slug, **validated(BanSerializer, request.data))
        return Response(SanctionSerializer(membership).data, status=status.HTTP_201_CREATED)


class BanDetailView(APIView):
    @extend_schema(responses=NO_CONTENT)
    def delete(self, request, slug, username):
        services.member_unban(actor=request.user, slug=slug, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MuteListView(APIView):
    @extend_schema(request=MuteSerializer, responses={201: SanctionSerializer})
    def post(self, request, slug):
        membership = services.member_mute(actor=request.user, slug=slug, **validated(MuteSerializer, request.data))
        return Response(SanctionSerializer(membership).data, status=status.HTTP_201_CREATED)


class MuteDetailView(APIView):
    @extend_schema(responses=NO_CONTENT)
    def delete(self, request, slug, username):
        services.member_unmute(actor=request.user, slug=slug, username=username)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DirectRoomView(APIView):
    @extend_schema(responses=RoomSerializer)
    def get(self, request, username):
        """The direct room with `username` if it exists; 404 until one of you starts it (a GET creates nothing)."""
        return room_response(request.user, selectors.direct_room_for_user(request.user, username))

    @extend_schema(request=None, responses=RoomSerializer)
    def post(self, request, username):
        """The direct room with `username`, created (with both memberships) if it does not exist yet."""
        return room_response(request.user, services.direct_room(user=request.user, username=username))


# Messages


class HistoryQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False)
    after = serializers.IntegerField(min_value=0, max_value=MAX_ID, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=HISTORY_MAX, default=50)
    around = serializers.IntegerField(min_value=0, max_value=MAX_ID, required=False)


class MessageListView(APIView):
    @extend_schema(parameters=[HistoryQuerySerializer], responses=MessagePageSerializer)
    def get(self, request, slug):
        """One page, ascending by id: the newest unless `before` or `after` is given; with
        `around`, the page centred on that id and `has_more_before` / `has_more_after`."""
        query = validated(HistoryQuerySerializer, request.query_params)
        room, _ = selectors.room_for_user(request.user, slug)
        if "around" in query:
            messages, before, after = selectors.message_page_around(room, query["around"], limit=query["limit"])
            return Response(
                {"results": [message_data(m) for m in messages], "has_more_before": before, "has_more_after": after}
            )
        messages, has_more = selectors.message_history(room, **query)
        return Response({"results": [message_data(m) for m in messages], "has_more": has_more})

    @extend_schema(request=MessageSendSerializer, responses={201: MessageSerializer, 200: MessageSerializer})
    def post(self, request, slug):
        """201 with the new message; 200 with the original when `client_id` was already used."""
        message, created = services.message_send(
            user=request.user, slug=slug, **validated(MessageSendSerializer, request.data)
        )
        return Response(message_data(message), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class UserQuerySerializer(serializers.Serializer):
    q = serializers.CharField(min_length=1, max_length=150)
    limit = serializers.IntegerField(min_value=1, max_value=20, default=10)


class UserSearchView(APIView):
    @extend_schema(parameters=[UserQuerySerializer], responses=UserSerializer(many=True))
    def get(self, request):
        """Active users whose username starts with `q`: for invitations and direct messages."""
        query = validated(UserQuerySerializer, request.query_params)
        return Response(UserSerializer(selectors.users_with_prefix(query["q"], limit=query["limit"]), many=True).data)


class MessageDetailView(APIView):
    @extend_schema(request=MessageEditSerializer, responses=MessageSerializer)
    def patch(self, request, message_id):
        body = validated(MessageEditSerializer, request.data)["body"]
        return Response(message_data(services.message_edit(user=request.user, message_id=message_id, body=body)))

    @extend_schema(responses=NO_CONTENT)
    def delete(self, request, message_id):
        services.message_delete(user=request.user, message_id=message_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageReactionView(APIView):
    """The caller's reaction on a message: adding one already there, or removing one that is
    absent, changes nothing; either way the answer is the message as it stands."""

    @extend_schema(request=ReactionInputSerializer, responses=MessageSerializer)
    def post(self, request, message_id):
        emoji = validated(ReactionInputSerializer, request.data)["emoji"]
        return Response(message_data(services.reaction_add(user=request.user, message_id=message_id, emoji=emoji)))

    @extend_schema(parameters=[ReactionInputSerializer], responses=MessageSerializer)
    def delete(self, request, message_id):
        # The JSON body, as the contract says; `?emoji=` too, for clients that send no body with a DELETE.
        emoji = validated(ReactionInputSerializer, request.data or request.query_params)["emoji"]
        return Response(message_data(services.reaction_remove(user=request.user, message_id=message_id, emoji=emoji)))


class ReportSerializer(serializers.Serializer):
    reason = serializers.CharField(allow_blank=True, help_text="What is wrong with the message; 1-500 characters.")


class MessageReportView(APIView):
    @extend_schema(
        request=ReportSerializer,
        responses={
            201: inline_serializer(
                "MessageReport",
                {
                    "id": serializers.IntegerField(),
                    "message": serializers.IntegerField(),
                    "reason": serializers.CharField(),
                    "created_at": serializers.DateTimeField(),
                },
            )
        },
    )
    def post(self, request, message_id):
        """Report a message you can see to the room's moderators (once per message)."""
        reason = validated(ReportSerializer, request.data)["reason"]
        report = services.message_report(user=request.user, message_id=message_id, reason=reason)
        return Response(
            {
                "id": report.pk,
                "message": report.message_id,
                "reason": report.reason,
                "created_at": serializers.DateTimeField().to_representation(report.created_at),
            },
            status=status.HTTP_201_CREATED,
        )


class ReadView(APIView):
    @extend_schema(
        request=ReadSerializer,
        responses=inline_serializer(
            "ReadMarker",
            {
                "room": serializers.CharField(),
                "last_read_id": serializers.IntegerField(),
                "unread": serializers.IntegerField(),
                "mentions": serializers.IntegerField(),
            },
        ),
    )
    def post(self, request, slug):
        message_id = validated(ReadSerializer, request.data)["message_id"]
        membership = services.read_mark(user=request.user, slug=slug, message_id=message_id)
        unread, mentions = selectors.unread_counts(membership)
        return Response({"room": slug, "last_read_id": membership.last_read_id, "unread": unread, "mentions": mentions})


class ExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=list(export.FORMATS), default="json")
    since = serializers.IntegerField(min_value=0, max_value=MAX_ID, required=False, help_text="Message id, exclusive.")
    until = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False, help_text="Message id, inclusive.")


class FormatIsExportFormat(DefaultContentNegotiation):
    """`?format=` names the export format here, not a renderer; errors are rendered as JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class RoomExportView(APIView):
    content_negotiation_class = FormatIsExportFormat

    @extend_schema(
        parameters=[ExportQuerySerializer],
        responses={
            (200, "application/json"): MessageSerializer(many=True),
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            (200, "text/csv"): OpenApiTypes.STR,
        },
    )
    def get(self, request, slug):
        """The room's whole history in id order, streamed as a file; members and staff only (see `chat.export`)."""
        query = validated(ExportQuerySerializer, request.query_params)
        room = export.room_for_export(request.user, slug)
        fmt = query.pop("format")
        chunks = export.HeldChunks(export.export_chunks(room, fmt, **query), export.export_slot(request.user))
        if isinstance(request._request, ASGIRequest):
            chunks = export.aiter_chunks(chunks)
        response = StreamingHttpResponse(chunks, content_type=export.FORMATS[fmt][0])
        response["Content-Disposition"] = f'attachment; filename="{export.export_filename(room, fmt)}"'
        return response


# Notices


class NoticeSerializer(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=False, allow_blank=True)  # the service says what is wrong with it
    level = serializers.ChoiceField(choices=services.NOTICE_LEVELS, default="info")
    room = serializers.CharField(required=False, default=None, help_text="A room slug; without it, everyone connected.")


class NoticeView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        request=NoticeSerializer,
        responses={
            202: inline_serializer(
                "NoticeFrame",
                {
                    "type": serializers.CharField(),
                    "level": serializers.ChoiceField(choices=services.NOTICE_LEVELS),
                    "text": serializers.CharField(),
                    "room": serializers.CharField(required=False),
                },
            )
        },
    )
    def post(self, request):
        """Staff only. 202 with the `notice` frame, sent to every open connection (or one room's) on every process."""
        frame = services.notice_send(actor=request.user, **validated(NoticeSerializer, request.data))
        return Response(frame, status=status.HTTP_202_ACCEPTED)
