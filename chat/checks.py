"""System checks of `manage.py check --deploy`: the JWT signing key, which Django does not know of."""

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.utils.translation import gettext as _

from chatproject.keys import HOW_TO_SET, key_problem


@register(Tags.security, deploy=True)
def check_jwt_signing_key(app_configs, **kwargs):
    """Django checks SECRET_KEY (security.W009); access and refresh tokens are signed with this one."""
    key = settings.SIMPLE_JWT.get("SIGNING_KEY") or ""
    if problem := key_problem(key, _):
        return [
            Warning(
                _("JWT_SIGNING_KEY %(problem)s: anyone who knows or guesses it can sign tokens as any user.")
                % {"problem": problem},
                hint=_("Set JWT_SIGNING_KEY to the output of `%(command)s`.") % {"command": HOW_TO_SET},
                id="chat.W001",
            )
        ]
    if key == settings.SECRET_KEY:
        return [
            Warning(
                _("JWT_SIGNING_KEY equals DJANGO_SECRET_KEY."),
                hint=_("Give each its own random value, so that a leak of one does not forge the other."),
                id="chat.W002",
            )
        ]
    return []
