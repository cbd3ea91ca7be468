"""Uploads: the room check before any byte is stored, the row once the file is stored, and the
purge of stored bytes nobody may fetch any more. The file work itself (`chat.uploads`) runs in
threads of its own; only these short database steps run on the database thread."""

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import Upload
from ..selectors import member_room_for_user
from ..uploads import storage
from ..uploads.files import Inspected
from ._common import budget, require_writable

UNATTACHED_FOR = timedelta(hours=24)


def upload_check(*, user, slug: str) -> None:
    """Raises unless `user` may send in room `slug` (as `message_send` would refuse it), and
    counts the upload against the user's `upload` budget (CHAT_WRITE_RATES)."""
    room, membership = member_room_for_user(user, slug)
    require_writable(user, room, membership)
    budget("upload", user)


def upload_create(*, user, slug: str, filename: str, size: int, inspected: Inspected, name: str, thumb: str) -> Upload:
    """The row of a file already stored as `name` (and `thumb`). The room is checked again: the
    sender may have been removed while the file was stored. On refusal the stored bytes go."""
    try:
        room, membership = member_room_for_user(user, slug)
        require_writable(user, room, membership)
        with transaction.atomic():
            return Upload.objects.create(
                room=room,
                uploader=user,
                filename=filename,
                size=size,
                content_type=inspected.content_type,
                name=name,
                thumb=thumb,
                width=inspected.width,
                height=inspected.height,
            )
    except BaseException:
        storage.delete(name, thumb)
        raise


def uploads_purge(*, now=None) -> int:
    """Delete the stored bytes of files nobody may fetch again: those of deleted messages and
    those never attached within UNATTACHED_FOR. The rows stay (marked `purged`) for the history.
    Returns how many uploads were purged."""
    now = now or timezone.now()
    stale = Upload.objects.filter(purged=False).filter(
        Q(message__deleted=True) | Q(message__isnull=True, created_at__lt=now - UNATTACHED_FOR)
    )
    count = 0
    for upload in stale.iterator():
        storage.delete(upload.name, upload.thumb)
        Upload.objects.filter(pk=upload.pk).update(purged=True)
        count += 1
    return count
