"""DRF serializers. `message_data` is the one message representation, for REST and WebSocket alike."""

from datetime import UTC, datetime

from django.contrib.auth import get_user_model, password_validation
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import usernames
from .models import MAX_ID, SLUG_PATTERN, Membership, Message, Room

User = get_user_model()


def timestamp(value: datetime | None) -> str | None:
    """UTC, millisecond precision, `Z` suffix: `2026-11-22T10:00:00.123Z`."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def user_data(user) -> dict | None:
    return None if user is None else {"id": user.pk, "username": user.username}


def message_data(message: Message) -> dict:
    """The wire shape of a message. Expects `room` and `author` loaded (select_related)."""
    return {
        "id": message.pk,
        "room": message.room.slug,
        "author": user_data(message.author),
        "body": "" if message.deleted else message.body,
        "kind": message.kind,
        "client_id": message.client_id or None,
        "created_at": timestamp(message.created_at),
        "edited_at": timestamp(message.edited_at),
        "deleted": message.deleted,
        "html": "" if message.deleted else message.html,
        "reply_to": message.reply_to_id,
        "thread": message.thread_id,
        "reply_count": message.reply_count,
        "mentions": [] if message.deleted else message.mentions,
        "mentions_room": message.mentions_room and not message.deleted,
        "reactions": [] if message.deleted else message.reactions,
        "attachments": [] if message.deleted else message.attachments,
        "seq": message.seq,
    }


def upload_data(upload) -> dict:
    """The wire shape of an upload (PROTOCOL.md, "Files"), also what a message's `attachments`
    keeps of it. The URLs are paths on this server; each download is authorized on its own."""
    data = {
        "id": upload.pk,
        "name": upload.filename,
        "size": upload.size,
        "content_type": upload.content_type,
        "url": f"/api/uploads/{upload.pk}/",
    }
    if upload.thumb:
        data["thumb_url"] = f"/api/uploads/{upload.pk}/thumb/"
    if upload.width is not None:
        data["width"], data["height"] = upload.width, upload.height
    return data


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)


class ReactionSerializer(serializers.Serializer):
    emoji = serializers.CharField()
    count = serializers.IntegerField()
    users = serializers.ListField(child=serializers.CharField())


class MessageSerializer(serializers.Serializer):
    """Read-only: the representation is `message_data`; fields are declared for the schema."""

    id = serializers.IntegerField()
    room = serializers.CharField()
    author = UserSerializer(allow_null=True)
    body = serializers.CharField()
    kind = serializers.ChoiceField(choices=Message.Kind.choices)
    client_id = serializers.CharField(allow_null=True)
    created_at = serializers.CharField()
    edited_at = serializers.CharField(allow_null=True)
    deleted = serializers.BooleanField()
    html = serializers.CharField()
    reply_to = serializers.IntegerField(allow_null=True)
    thread = serializers.IntegerField(allow_null=True)
    reply_count = serializers.IntegerField()
    mentions = UserSerializer(many=True)
    mentions_room = serializers.BooleanField()
    reactions = ReactionSerializer(many=True)
    attachments = serializers.ListField(child=serializers.DictField())
    seq = serializers.IntegerField()

    def to_representation(self, instance):
        return message_data(instance)


class MessagePageSerializer(serializers.Serializer):
    results = MessageSerializer(many=True)
    has_more = serializers.BooleanField()


class MessageSendSerializer(serializers.Serializer):
    body = serializers.CharField(trim_whitespace=False, allow_blank=True)
    client_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    kind = serializers.ChoiceField(choices=[("user", "user"), ("emote", "emote")], default="user")
    reply_to = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, allow_null=True, default=None, help_text="A message id."
    )
    attachments = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        max_length=10,
        required=False,
        allow_null=True,
        default=None,
        help_text="Upload ids (at most 10): the sender's own unattached uploads in this room.",
    )


class ThreadPageSerializer(serializers.Serializer):
    root = MessageSerializer()
    results = MessageSerializer(many=True)
    has_more = serializers.BooleanField()


class MessageEditSerializer(serializers.Serializer):
    body = serializers.CharField(trim_whitespace=False, allow_blank=True)


class ReactionInputSerializer(serializers.Serializer):
    emoji = serializers.CharField(
        trim_whitespace=False,
        help_text="One Unicode emoji (a single grapheme cluster) or a shortcode `:[a-z0-9_+-]{1,32}:`.",
    )


class RegisterSerializer(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]{1,150}$")
    password = serializers.CharField(write_only=True, style={"input_type": "password"})
    email = serializers.EmailField(required=False, allow_blank=True, default="")

    def validate_username(self, value):
        value = usernames.normalize(value)
        usernames.validate_username_script(value)
        if User.objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError(_("That username is taken."))
        return value

    def validate(self, attrs):
        password_validation.validate_password(attrs["password"], User(username=attrs["username"]))
        return attrs


class PasswordChangeSerializer(serializers.Serializer):
    """The service checks the old password and runs Django's password validators on the new one."""

    old_password = serializers.CharField(write_only=True, trim_whitespace=False, style={"input_type": "password"})
    new_password = serializers.CharField(write_only=True, trim_whitespace=False, style={"input_type": "password"})


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class RoomSerializer(serializers.ModelSerializer):
    unread = serializers.IntegerField(read_only=True, default=0)
    mentions = serializers.IntegerField(read_only=True, default=0, help_text="Unread messages that mention you.")
    member = serializers.BooleanField(read_only=True, default=False)
    role = serializers.CharField(read_only=True, allow_null=True, default=None)
    last_message_id = serializers.IntegerField(read_only=True, allow_null=True, default=None)
    created_at = serializers.SerializerMethodField()

    class Meta:
        model = Room
        fields = [
            "slug",
            "name",
            "kind",
            "topic",
            "locked",
            "archived",
            "created_at",
            "unread",
            "mentions",
            "member",
            "role",
            "last_message_id",
        ]

    def get_created_at(self, room: Room) -> str:
        return timestamp(room.created_at)


class RoomCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    slug = serializers.RegexField(SLUG_PATTERN, required=False, allow_blank=True, default="")
    kind = serializers.ChoiceField(choices=[("public", "public"), ("private", "private")], default="public")
    topic = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class RoomUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    topic = serializers.CharField(max_length=300, required=False, allow_blank=True)
    locked = serializers.BooleanField(required=False)


class MemberSerializer(serializers.Serializer):
    user = serializers.SerializerMethodField()
    role = serializers.CharField()
    online = serializers.BooleanField()
    joined_at = serializers.DateTimeField()

    @extend_schema_field(UserSerializer)
    def get_user(self, membership: Membership):
        return user_data(membership.user)


class InviteSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.MEMBER)


class ReadSerializer(serializers.Serializer):
    message_id = serializers.IntegerField(min_value=0, max_value=MAX_ID)


class BanSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    minutes = serializers.IntegerField(
        min_value=1, max_value=Membership.MAX_BAN_MINUTES, required=False, allow_null=True, default=None
    )


class MuteSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    minutes = serializers.IntegerField(min_value=1, max_value=Membership.MAX_MUTE_MINUTES)


class SanctionSerializer(serializers.Serializer):
    """A ban or mute as stored: whom, until when (null: until lifted), why."""

    username = serializers.CharField(source="user.username")
    banned_until = serializers.SerializerMethodField()
    ban_reason = serializers.CharField()
    muted_until = serializers.SerializerMethodField()

    def get_banned_until(self, membership: Membership) -> str | None:
        return timestamp(membership.banned_until)

    def get_muted_until(self, membership: Membership) -> str | None:
        return timestamp(membership.muted_until)
