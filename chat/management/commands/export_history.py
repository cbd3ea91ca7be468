"""`manage.py export_history --room slug`: a room's history as the REST export streams it (`chat.export`).

Writes to stdout or `--output`; shows progress on stderr only when stderr is a terminal, so
piped or redirected runs print nothing but the export. Archived rooms can be exported too:
the command line is for operators, who need the archive most.
"""

import sys

from django.core.management.base import CommandError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from chat import export
from chat.errors import Invalid
from chat.management.base import ChatCommand
from chat.models import Room


class Command(ChatCommand):
    help = gettext_lazy("Export a room's history (json, ndjson or csv) to stdout or a file, in constant memory.")

    def add_arguments(self, parser):
        parser.add_argument("--room", required=True, help=_("The room's slug."))
        parser.add_argument("--format", choices=list(export.FORMATS), default="ndjson")
        parser.add_argument("--output", help=_("A file to write; stdout when omitted."))
        parser.add_argument("--since", type=int, help=_("Start after this message id (exclusive)."))
        parser.add_argument("--until", type=int, help=_("Stop at this message id (inclusive)."))

    def handle(self, *args, **options):
        room = Room.objects.filter(slug=options["room"]).first()
        if room is None:
            raise CommandError(
                _("No room '%(slug)s': check the slug (the room's URL ends with it).") % {"slug": options["room"]}
            )
        since, until = options["since"], options["until"]
        progress = self._progress(room, since, until)
        try:
            chunks = export.export_chunks(room, options["format"], since=since, until=until, progress=progress)
        except Invalid as error:
            raise CommandError(error.detail) from error
        if options["output"]:
            with open(options["output"], "wb") as out:
                out.writelines(chunks)
        else:
            self._write_stdout(chunks)
        if progress:
            sys.stderr.write("\n")

    def _write_stdout(self, chunks):
        # Bytes to the real stdout; a text stream (call_command(stdout=StringIO())) gets text.
        # Blocks end at row boundaries, so each one decodes on its own.
        binary = getattr(self.stdout, "buffer", None)
        for chunk in chunks:
            if binary:
                binary.write(chunk)
            else:
                self.stdout.write(chunk.decode(), ending="")
        if binary:
            binary.flush()

    def _progress(self, room, since, until):
        """A `\r` progress line on stderr when it is a terminal; None (quiet) otherwise."""
        if not sys.stderr.isatty():
            return None
        total = export.export_messages(room, since=since, until=until).count()
        shown = -1

        def show(count):
            nonlocal shown
            if count == shown:
                return
            shown = count
            sys.stderr.write(
                "\r"
                + _("%(count)s/%(total)s messages (%(percent)s%%)")
                % {"count": count, "total": total, "percent": 100 * count // max(total, 1)}
            )
            sys.stderr.flush()

        return show
