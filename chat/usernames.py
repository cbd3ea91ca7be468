"""Usernames: NFKC-normalised, and refused when they mix scripts with look-alike letters.

`аlice` with a Cyrillic `а` would pass for `alice` on screen. A name in one script (Latin,
Cyrillic, Chinese, ...) is fine, and so is Japanese or Korean, which mix Han with their own
scripts by nature. The look-alike data is Unicode's (confusable_homoglyphs).
"""

import unicodedata

from confusable_homoglyphs import categories, confusables
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

# Scripts that one writing system mixes (Unicode TR 39, "highly restrictive" profile).
WRITING_SYSTEMS = ({"HAN", "HIRAGANA", "KATAKANA"}, {"HAN", "HANGUL"}, {"HAN", "BOPOMOFO"})


def normalize(username: str) -> str:
    """What Django stores (`AbstractBaseUser.normalize_username`): full-width `ａ` becomes `a`."""
    return unicodedata.normalize("NFKC", username)


def validate_username_script(username: str) -> None:
    """Raise ValidationError if `username` mixes scripts and holds letters that look like another script's."""
    scripts = {categories.alias(char) for char in username} - {"COMMON", "INHERITED"}
    if any(scripts <= system for system in WRITING_SYSTEMS):
        return
    if confusables.is_dangerous(username):
        raise ValidationError(
            _("This username mixes %(scripts)s letters, some of which look alike: write it in one alphabet."),
            code="mixed_script",
            params={"scripts": " and ".join(sorted(script.capitalize() for script in scripts))},
        )
