"""Moderation in the Django admin.

Every change to chat state goes through `chat.services`, so connected clients see it live
(`room.updated`, `message.deleted`, `room.left`, ...). Fields no service changes are
read-only here, and hard deletes are disabled: rooms are archived, messages soft-deleted,
members removed. One module per model group; importing them registers their admins.
"""

from . import members, messages, moderation, rooms, users  # noqa: F401
