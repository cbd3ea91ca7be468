"""`manage.py send_notice "text" [--room slug] [--level warning]`: a staff `notice` to every
connected client, or to one room's, on every server process (through Redis)."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chat import services
from chat.errors import ChatError


class Command(BaseCommand):
    help = "Send a notice to every connected client, or to those in one room, on every server process."

    def add_arguments(self, parser):
        parser.add_argument("text", help=f"the notice, at most {settings.CHAT_MAX_BODY} characters")
        parser.add_argument("--room", help="a room slug: only connections in that room get the notice")
        parser.add_argument("--level", choices=services.NOTICE_LEVELS, default="info")

    def handle(self, *args, text, room, level, **options):
        if not settings.REDIS_URL:
            # The in-memory layer lives in this process alone: no server would receive the notice.
            raise CommandError("REDIS_URL is not set: set it to the servers' Redis so the notice can reach them.")
        try:
            services.notice_send(text=text, level=level, room=room)
        except ChatError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"Sent a {level} notice to {f'room {room!r}' if room else 'everyone connected'}.")
