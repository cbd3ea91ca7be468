"""`manage.py purge_uploads`: delete the stored bytes of files nobody may fetch any more (those of
deleted messages, and uploads never sent within 24 hours). Run it from cron or a systemd timer."""

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from chat import services
from chat.management.base import ChatCommand


class Command(ChatCommand):
    help = gettext_lazy("Delete the stored files of deleted messages and of uploads never sent within 24 hours.")

    def handle(self, *args, **options):
        count = services.uploads_purge()
        self.stdout.write(_("Purged %(count)s files.") % {"count": count})
