"""`manage.py send_notice "text" [--room slug] [--level warning]`: a staff `notice` to every
connected client, or to one room's, on every server process (through Redis)."""

from django.conf import settings
from django.core.management.base import CommandError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from chat import services
from chat.errors import ChatError
from chat.management.base import ChatCommand


class Command(ChatCommand):
    help = gettext_lazy("Send a notice to every connected client, or to those in one room, on every server process.")

    def add_arguments(self, parser):
        parser.add_argument(
            "text", help=_("the notice, at most %(limit)s characters") % {"limit": settings.CHAT_MAX_BODY}
        )
        parser.add_argument("--room", help=_("a room slug: only connections in that room get the notice"))
        parser.add_argument("--level", choices=services.NOTICE_LEVELS, default="info")

    def handle(self, *args, text, room, level, **options):
        if not settings.REDIS_URL:
            # The in-memory layer lives in this process alone: no server would receive the notice.
            raise CommandError(_("REDIS_URL is not set: set it to the servers' Redis so the notice can reach them."))
        try:
            services.notice_send(text=text, level=level, room=room)
        except ChatError as exc:
            raise CommandError(exc.detail) from None
        if room:
            self.stdout.write(_("Sent a %(level)s notice to room '%(room)s'.") % {"level": level, "room": room})
        else:
            self.stdout.write(_("Sent a %(level)s notice to everyone connected.") % {"level": level})
