"""Rooms, memberships and messages: fields, constraints and tiny properties only.

State changes go through `chat.services`; nothing here saves on its own or sends events.
"""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

SLUG_PATTERN = r"^[a-z0-9-]{1,50}$"
slug_validator = RegexValidator(SLUG_PATTERN, _("Use 1-50 lowercase letters, digits or hyphens."))
MAX_ID = 2**63 - 1  # ids are bigints: a larger one names nothing, and no query should carry it


class Room(models.Model):
    class Kind(models.TextChoices):
        PUBLIC = "public", _("Public")
        PRIVATE = "private", _("Private")
        DIRECT = "direct", _("Direct")

    slug = models.CharField(_("slug"), max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(_("name"), max_length=100)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.PUBLIC)
    topic = models.CharField(_("topic"), max_length=300, blank=True)
    locked = models.BooleanField(_("locked"), default=False, help_text=_("Read-only: sends are refused."))
    archived = models.BooleanField(
        _("archived"), default=False, help_text=_("Hidden from lists; connections are closed.")
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    # The room's change sequence: every change to its messages takes the next value under the
    # room's row lock, in commit order (`Message.seq`; `join` with `changes_since` resumes from it).
    change_seq = models.BigIntegerField(_("change sequence"), default=0, editable=False)

    class Meta:
        verbose_name, verbose_name_plural = _("room"), _("rooms")
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["public", "private", "direct"]), name="room_kind_valid"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def group_name(self) -> str:
        return f"room.{self.pk}"


class Membership(models.Model):
    # Bans and mutes are whole minutes up to these; a longer ban is one until lifted.
    MAX_BAN_MINUTES = 10 * 365 * 24 * 60
    MAX_MUTE_MINUTES = 365 * 24 * 60

    class Role(models.TextChoices):
        OWNER = "owner", _("Owner")
        MODERATOR = "moderator", _("Moderator")
        MEMBER = "member", _("Member")

    class Notify(models.TextChoices):
        ALL = "all", _("Every message")
        MENTIONS = "mentions", _("Mentions only")
        NONE = "none", _("Nothing")

    room = models.ForeignKey(Room, verbose_name=_("room"), on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.MEMBER)
    last_read_id = models.BigIntegerField(_("last read ID"), default=0)
    muted_until = models.DateTimeField(_("muted until"), null=True, blank=True)
    # A banned membership is kept so the ban outlives leaving; it grants no access.
    banned = models.BooleanField(_("banned"), default=False)
    banned_until = models.DateTimeField(_("banned until"), null=True, blank=True, help_text=_("Empty: until lifted."))
    ban_reason = models.CharField(_("ban reason"), max_length=300, blank=True)
    joined_at = models.DateTimeField(_("joined at"), default=timezone.now)
    # Blank: the room kind's default (`effective_notify`).
    notify = models.CharField(_("notify"), max_length=10, choices=Notify.choices, blank=True)

    class Meta:
        verbose_name, verbose_name_plural = _("membership"), _("memberships")
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="membership_unique")]
        indexes = [models.Index(fields=["user", "room"], name="membership_user_room")]

    def __str__(self) -> str:
        return f"{self.user} in {self.room}"

    def is_banned(self, now=None) -> bool:
        """The ban rule; `active_membership_q` is its negation in SQL."""
        now = now or timezone.now()
        return self.banned and (self.banned_until is None or self.banned_until > now)

    def is_muted(self, now=None) -> bool:
        now = now or timezone.now()
        return self.muted_until is not None and self.muted_until > now

    @property
    def can_moderate(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.MODERATOR)

    @property
    def effective_notify(self) -> str:
        """The member's choice, else every message in a direct room and mentions elsewhere."""
        return effective_notify(self.notify, self.room.kind)


def effective_notify(notify: str, kind: str) -> str:
    """`Membership.effective_notify` of a stored `notify` in a room of `kind` (for rows read by hand)."""
    if notify:
        return notify
    return Membership.Notify.ALL if kind == Room.Kind.DIRECT else Membership.Notify.MENTIONS


def active_membership_q(prefix: str = "", now=None) -> Q:
    """Memberships that grant access: not banned, or banned with an expired ban (`not is_banned()`).

    The ban rule for queries; `chat.sql.member_rooms` repeats it by hand, and
    `test_sql.py::test_member_rooms_apply_the_ban_rule_as_the_orm_does` holds the three together.
    """
    now = now or timezone.now()
    return Q(**{f"{prefix}banned": False}) | Q(**{f"{prefix}banned_until__lte": now})


def unread_messages_q(user_id, last_read_id) -> Q:
    """The messages (of one room) that count as unread for a member: after their read marker,
    not deleted, and not their own (a message whose author is gone counts). Either argument
    may be an `OuterRef`.

    The unread rule; `chat.sql.room_summaries` repeats it by hand, and
    `test_sql.py::test_unread_is_counted_alike_everywhere` holds them together.
    """
    return Q(id__gt=last_read_id, deleted=False) & ~Q(author_id=user_id)


def mentioning_q(user_id, joined_at) -> Q:
    """The messages that mention the member: by name (a `Mention` row for them) or the whole room
    (`mentions_room`, `@room` or `@all`) once they were in it (written at or after `joined_at`:
    the room's members of the time were mentioned, not those who came later). Either argument
    may be an `OuterRef`.

    With `unread_messages_q`, the unread mention count (`unread_mentions_q`); alone (and not
    their own), the mentions inbox. `chat.sql.room_summaries` repeats it by hand, and
    `test_sql.py::test_unread_mentions_are_counted_alike_everywhere` holds them together.
    """
    named = Mention.objects.filter(message_id=OuterRef("pk"), user_id=user_id)
    return Q(mentions_room=True, created_at__gte=joined_at) | Q(Exists(named))


def unread_mentions_q(user_id, last_read_id, joined_at) -> Q:
    """The unread messages (`unread_messages_q`) that mention the member (`mentioning_q`)."""
    return unread_messages_q(user_id, last_read_id) & mentioning_q(user_id, joined_at)


class Message(models.Model):
    class Kind(models.TextChoices):
        USER = "user", _("User")
        SYSTEM = "system", _("System")
        EMOTE = "emote", _("Emote")

    room = models.ForeignKey(Room, verbose_name=_("room"), on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("author"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    body = models.TextField(_("body"), blank=True)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.USER)
    client_id = models.CharField(_("client ID"), max_length=64, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    edited_at = models.DateTimeField(_("edited at"), null=True, blank=True)
    deleted = models.BooleanField(_("deleted"), default=False)
    # Written with the body (`chat.markup`), so that readers never render or resolve anything.
    html = models.TextField(_("HTML"), blank=True)
    mentions = models.JSONField(_("mentions"), default=list, blank=True)  # [{"id", "username"}]
    mentions_room = models.BooleanField(_("mentions the room"), default=False)
    # Whom the earlier versions of an edited message named (`{"users": [ids], "room": bool}`): they
    # were alerted then, so an edit that names them again alerts nobody twice.
    earlier_mentions = models.JSONField(_("earlier mentions"), default=dict, blank=True, editable=False)
    reply_to = models.ForeignKey(
        "self", verbose_name=_("reply to"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    thread = models.ForeignKey(
        "self", verbose_name=_("thread"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reply_count = models.IntegerField(_("replies"), default=0)
    # The wire summary of `Reaction` rows, rewritten with them: [{"emoji", "count", "users"}].
    reactions = models.JSONField(_("reactions"), default=list, blank=True)
    seq = models.BigIntegerField(_("change sequence"), default=0)
    # The wire shape of each attached `Upload`, written when they are attached: [{"id", "name", …}].
    attachments = models.JSONField(_("attachments"), default=list, blank=True)

    class Meta:
        verbose_name, verbose_name_plural = _("message"), _("messages")
        constraints = [
            models.UniqueConstraint(
                fields=["author", "client_id"], condition=~Q(client_id=""), name="message_author_client_id_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["room", "id"], name="message_room_id"),
            models.Index(fields=["room", "seq"], name="message_room_seq"),
            models.Index(fields=["thread", "id"], name="message_thread_id"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} in {self.room_id}"


class Upload(models.Model):
    """A file stored through Django's storage API, sent with at most one message.

    Unattached, only its uploader may fetch it; attached, whoever may read the room, until the
    message is deleted. `name` is the stored file's storage name, `thumb` its preview's.
    """

    room = models.ForeignKey(Room, verbose_name=_("room"), on_delete=models.CASCADE, related_name="uploads")
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("uploader"), on_delete=models.CASCADE, related_name="uploads"
    )
    message = models.ForeignKey(
        Message, verbose_name=_("message"), null=True, blank=True, on_delete=models.SET_NULL, related_name="uploads"
    )
    filename = models.CharField(_("file name"), max_length=255)
    size = models.BigIntegerField(_("size"))
    content_type = models.CharField(_("content type"), max_length=100)
    name = models.CharField(_("stored file"), max_length=300)
    thumb = models.CharField(_("stored preview"), max_length=300, blank=True)
    width = models.IntegerField(_("width"), null=True, blank=True)
    height = models.IntegerField(_("height"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    # The stored bytes were removed (`purge_uploads`): the row stays for the message's history.
    purged = models.BooleanField(_("purged"), default=False)

    class Meta:
        verbose_name, verbose_name_plural = _("upload"), _("uploads")

    def __str__(self) -> str:
        return f"{self.filename} ({self.pk})"


class Mention(models.Model):
    """A member named in a message (`Message.mentions`), for the mentions inbox and unread counts."""

    message = models.ForeignKey(Message, verbose_name=_("message"), on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="+"
    )
    room = models.ForeignKey(Room, verbose_name=_("room"), on_delete=models.CASCADE, related_name="+")

    class Meta:
        verbose_name, verbose_name_plural = _("mention"), _("mentions")
        constraints = [models.UniqueConstraint(fields=["message", "user"], name="mention_unique")]
        indexes = [models.Index(fields=["user", "room", "message"], name="mention_user_room")]


class Reaction(models.Model):
    """One user's emoji on a message; `Message.reactions` is their summary."""

    message = models.ForeignKey(Message, verbose_name=_("message"), on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE, related_name="+"
    )
    emoji = models.CharField(_("emoji"), max_length=64)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name, verbose_name_plural = _("reaction"), _("reactions")
        constraints = [models.UniqueConstraint(fields=["message", "user", "emoji"], name="reaction_unique")]


class ModerationAction(models.Model):
    """One moderation step, written by the service that took it; never edited afterwards."""

    class Action(models.TextChoices):
        BAN = "ban", _("Ban")
        UNBAN = "unban", _("Unban")
        MUTE = "mute", _("Mute")
        UNMUTE = "unmute", _("Unmute")
        KICK = "kick", _("Kick")
        EDIT_MESSAGE = "edit_message", _("Edit message")
        DELETE_MESSAGE = "delete_message", _("Delete message")
        RESTORE_MESSAGE = "restore_message", _("Restore message")
        LOCK = "lock", _("Lock")
        UNLOCK = "unlock", _("Unlock")
        ARCHIVE = "archive", _("Archive")
        TOPIC = "topic", _("Topic")
        DEACTIVATE = "deactivate", _("Deactivate")
        REPORT_RESOLVE = "report_resolve", _("Resolve report")

    class Source(models.TextChoices):
        ADMIN = "admin", _("Admin")
        REST = "rest", _("REST")
        WEBSOCKET = "websocket", _("WebSocket")
        COMMAND = "command", _("Command")

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("actor"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    action = models.CharField(_("action"), max_length=20, choices=Action.choices)
    room = models.ForeignKey(
        Room, verbose_name=_("room"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    target_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("target user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    target_message = models.ForeignKey(
        Message, verbose_name=_("target message"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField(_("reason"), blank=True)
    source = models.CharField(_("source"), max_length=10, choices=Source.choices)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    detail = models.JSONField(_("detail"), default=dict, blank=True)

    class Meta:
        verbose_name, verbose_name_plural = _("moderation action"), _("moderation actions")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor} ({self.source})"


class Report(models.Model):
    """A user's report of a message, open until a moderator resolves it."""

    message = models.ForeignKey(Message, verbose_name=_("message"), on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("reporter"), on_delete=models.CASCADE, related_name="reports"
    )
    reason = models.CharField(_("reason"), max_length=500)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("resolved by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolution = models.TextField(_("resolution"), blank=True)

    class Meta:
        verbose_name, verbose_name_plural = _("report"), _("reports")
        constraints = [models.UniqueConstraint(fields=["message", "reporter"], name="report_unique")]
        indexes = [models.Index(fields=["resolved_at"], name="report_resolved_at")]

    def __str__(self) -> str:
        return f"report #{self.pk} of message #{self.message_id}"
