"""A send's `attachments`: checked with the batch (`batch._check_attachments`), attached in the
transaction that inserts the message. Sends without attachments never reach this module."""

from django.utils.translation import gettext_lazy as _

from ..errors import Invalid
from ..models import MAX_ID, Message, Upload
from ..serializers import upload_data

MAX_ATTACHMENTS = 10


def clean_ids(ids) -> list[int]:
    """At most MAX_ATTACHMENTS distinct upload ids."""
    if not isinstance(ids, list) or not all(
        isinstance(pk, int) and not isinstance(pk, bool) and 0 < pk <= MAX_ID for pk in ids
    ):
        raise Invalid(_("attachments: a list of upload ids."))
    if len(ids) > MAX_ATTACHMENTS:
        raise Invalid(_("attachments: at most %(max)s files per message."), max=MAX_ATTACHMENTS)
    if len(set(ids)) != len(ids):
        raise Invalid(_("attachments: each upload at most once."))
    return ids


def check(sends: list) -> list[Exception | None]:
    """Each id must be the sender's own upload in the send's room, not yet attached (one query for
    the batch, and none without attachments); sets each send's `attachment_data`."""
    wanted = {pk for send in sends for pk in send.attachments or ()}
    if not wanted:
        return [None] * len(sends)
    uploads = {upload.pk: upload for upload in Upload.objects.filter(pk__in=wanted, purged=False, message=None)}
    claimed: set[int] = set()  # two sends of one batch naming the same upload: the first has it
    refusals = []
    for send in sends:
        if not send.attachments:
            refusals.append(None)
            continue
        bad = next(
            (
                pk
                for pk in send.attachments
                if pk in claimed
                or (upload := uploads.get(pk)) is None
                or upload.uploader_id != send.user.pk
                or upload.room_id != send.room.pk
            ),
            None,
        )
        if bad is not None:
            refusals.append(
                Invalid(_("attachments: %(id)s is not a file you uploaded to this room and have not sent yet."), id=bad)
            )
            continue
        claimed.update(send.attachments)
        send.attachment_data = [upload_data(uploads[pk]) for pk in send.attachments]
        refusals.append(None)
    return refusals


def attach(pairs: list[tuple[list[int], Message]]) -> None:
    """Attach each message's uploads, inside the transaction that inserted it; raises Invalid
    (rolling it back) when one was attached meanwhile by a send racing this one."""
    for ids, message in pairs:
        if not ids:
            continue
        attached = Upload.objects.filter(
            pk__in=ids, message=None, purged=False, uploader_id=message.author_id, room_id=message.room_id
        ).update(message=message)
        if attached != len(ids):
            raise Invalid(_("attachments: a file of this message was just sent with another one."))
