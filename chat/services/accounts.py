"""Accounts: registration, password changes, and ending a user's other sign-ins."""

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from .. import events, protocol, usernames
from ..errors import Forbidden, Invalid

User = get_user_model()


def user_register(*, username: str, password: str, email: str = "") -> User:
    if not settings.CHAT_REGISTRATION_OPEN:
        raise Forbidden(_("Registration is closed on this server."))
    username = usernames.normalize(username)
    try:
        usernames.validate_username_script(username)
    except ValidationError as exc:
        raise Invalid(_("username: %(problem)s"), problem=exc.messages[0]) from None
    if User.objects.filter(username__iexact=username).exists():
        raise Invalid(_("username: that username is taken."))
    try:
        with transaction.atomic():
            return User.objects.create_user(username=username, password=password, email=email)
    except IntegrityError:  # registered concurrently
        raise Invalid(_("username: that username is taken.")) from None


def password_change(*, user, old_password, new_password, keep_session: str | None = None) -> User:
    """Change the password and end every other sign-in (`sign_ins_end`). Access tokens and other
    sessions stop matching the new password hash by themselves; the caller keeps its own session
    valid with `update_session_auth_hash`."""
    if not isinstance(old_password, str) or not user.check_password(old_password):
        raise Invalid(_("old_password: that is not your current password."))
    if not isinstance(new_password, str) or not new_password:
        raise Invalid(_("new_password: give the new password."))
    try:
        password_validation.validate_password(new_password, user)
    except ValidationError as exc:
        raise Invalid(_("new_password: %(problem)s"), problem=" ".join(exc.messages)) from None
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        sign_ins_end(user=user, keep_session=keep_session)
    return user


def sign_ins_end(*, user, keep_session: str | None = None) -> None:
    """After the user's password changed: blacklist their refresh tokens and close their sockets
    with 4401, except those of the session marked `keep_session` (`auth.session_mark`)."""
    with transaction.atomic():
        outstanding = OutstandingToken.objects.filter(
            user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
        )
        BlacklistedToken.objects.bulk_create(
            [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
        )
        events.publish(
            events.user_group(user.pk),
            events.close_event(
                protocol.CLOSE_UNAUTHENTICATED, "password changed: sign in again", keep_session=keep_session
            ),
        )
