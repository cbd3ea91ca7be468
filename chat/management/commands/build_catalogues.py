"""`manage.py build_catalogues`: the translation catalogues (locale/*/LC_MESSAGES/*.po) compiled to .mo.

The .mo files are build output, never committed: `make run`, `make test` and `make cluster` run
this first. With GNU gettext's `msgfmt` installed it is Django's `compilemessages` (which checks
the placeholders); without it, polib writes the same files, so a fresh machine needs only Python.
"""

import shutil
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from chat.management.base import ChatCommand


def catalogues() -> list[Path]:
    return sorted(po for directory in settings.LOCALE_PATHS for po in Path(directory).glob("*/LC_MESSAGES/*.po"))


def compile_with_polib(po_path: Path, mo_path: Path) -> None:
    """What msgfmt writes: the translated entries, fuzzy ones left out."""
    import polib  # requirements.txt; needed only where msgfmt is missing

    polib.pofile(str(po_path)).save_as_mofile(str(mo_path))


class Command(ChatCommand):
    help = gettext_lazy(
        "Compile the translation catalogues (.po) to .mo files: with GNU msgfmt when it is "
        "installed, else in Python (polib)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--python", action="store_true", help=_("Use polib even if msgfmt is installed."))

    def handle(self, *args, python=False, verbosity=1, **options):
        if shutil.which("msgfmt") and not python:
            locales = sorted({po_path.parent.parent.name for po_path in catalogues()})
            call_command(
                "compilemessages",
                verbosity=verbosity,
                locale=locales,
                ignore_patterns=[".venv", "staticfiles", "tests", "bench"],
            )
            return
        for po_path in catalogues():
            compile_with_polib(po_path, po_path.with_suffix(".mo"))
            if verbosity:
                self.stdout.write(_("compiled %(path)s") % {"path": po_path.with_suffix(".mo")})
