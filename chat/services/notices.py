"""Staff notices: a `notice` frame to every connection, or to a room's; nothing is stored."""

import logging

from django.conf import settings
from django.utils.translation import gettext_lazy as _

from .. import events, protocol
from ..errors import Forbidden, Gone, Invalid, NotFound
from ..models import Room
from ._common import storable

logger = logging.getLogger(__name__)

NOTICE_LEVELS = ("info", "warning")


def notice_send(*, text: str, level: str = "info", room: str | None = None, actor=None) -> dict:
    """Send a `notice` frame to every open connection on every process, or to those subscribed to `room`.

    Returns the frame. Nothing is stored: a client that is not connected misses it. Callable
    from any synchronous code; inside a transaction it goes out on commit. `actor` is the
    staff user sending it, or None from the command line.
    """
    if actor is not None and not actor.is_staff:
        raise Forbidden(_("Only staff can send notices."))
    if not isinstance(text, str) or not text.strip():
        raise Invalid(_("text: must be a non-empty string."))
    if len(text) > settings.CHAT_MAX_BODY:
        raise Invalid(
            _("text: %(length)s characters; the limit is %(limit)s."), length=len(text), limit=settings.CHAT_MAX_BODY
        )
    storable("text", text)  # every connection encodes it
    if level not in NOTICE_LEVELS:
        raise Invalid(_("level: use %(levels)s."), levels=" or ".join(map(repr, NOTICE_LEVELS)))
    if room is None:
        frame, group, room_id = protocol.notice(level, text), events.everyone_group(), None
    else:
        target = Room.objects.filter(slug=room).first() if isinstance(room, str) else None
        if target is None:
            raise NotFound(_("No room '%(room)s'."), room=room)
        if target.archived:
            raise Gone(_("Room '%(room)s' is archived."), room=room)
        frame, group, room_id = protocol.notice(level, text, target.slug), events.room_group(target.pk), target.pk
    events.publish(group, events.frame_event(frame, room_id=room_id))
    logger.info("%s notice to %s, sent by %s", level, room or "everyone", actor or "code (no user)")
    return frame
