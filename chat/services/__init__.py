"""The only code that changes chat state, one module per domain.

Each service checks access through `chat.selectors`, validates, writes inside
`transaction.atomic` (or, for a batch of messages on PostgreSQL, in one query string that
is a transaction of its own) and publishes its events through `chat.events.publish`, which sends
them after commit. REST views, the WebSocket consumer, the admin and management
commands all call these functions, as `services.<name>`; none of them writes models directly.
"""

from .accounts import password_change, sign_ins_end, user_register
from .batch import message_send_batch
from .members import member_invite, member_remove, membership_notify_set, room_join, room_leave
from .messages import message_delete, message_edit, message_restore, message_send, read_mark
from .moderation import (
    audit,
    member_ban,
    member_mute,
    member_unban,
    member_unmute,
    message_report,
    report_resolve,
    user_deactivate,
)
from .notices import NOTICE_LEVELS, notice_send
from .reactions import reaction_add, reaction_remove
from .rooms import direct_room, room_archive, room_create, room_update
from .uploads import upload_check, upload_create, uploads_purge

__all__ = [
    "NOTICE_LEVELS",
    "audit",
    "direct_room",
    "member_ban",
    "member_invite",
    "member_mute",
    "member_remove",
    "member_unban",
    "member_unmute",
    "membership_notify_set",
    "message_delete",
    "message_edit",
    "message_report",
    "message_restore",
    "message_send",
    "message_send_batch",
    "notice_send",
    "password_change",
    "reaction_add",
    "reaction_remove",
    "read_mark",
    "report_resolve",
    "room_archive",
    "room_create",
    "room_join",
    "room_leave",
    "room_update",
    "sign_ins_end",
    "user_deactivate",
    "upload_check",
    "upload_create",
    "uploads_purge",
    "user_register",
]
