"""JWT sign-in and refresh: a sign-in starts a chain of refresh tokens that rotation cannot
stretch past JWT_SESSION_MAX_DAYS, and that a password change ends.

Each refresh token carries `auth_time`, when its user last gave their password; rotating it
keeps the claim. Refreshing checks it, and the password digest simplejwt's CHECK_REVOKE_TOKEN
puts in every token, besides the blacklist (`services.password_change` blacklists the chain).
"""

import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import RefreshToken

from .auth import token_revoked

SIGNED_IN_CLAIM = "auth_time"  # OpenID Connect's name for it


def token_pair(user) -> RefreshToken:
    """A refresh token (with its `access_token`) for a user who has just given their password."""
    refresh = RefreshToken.for_user(user)
    refresh[SIGNED_IN_CLAIM] = int(time.time())
    return refresh


class SignInSerializer(TokenObtainPairSerializer):
    @classmethod
    def get_token(cls, user):
        return token_pair(user)


class RefreshSerializer(TokenRefreshSerializer):
    def validate(self, attrs):
        refresh = self.token_class(attrs["refresh"])
        signed_in = refresh.get(SIGNED_IN_CLAIM)
        if not isinstance(signed_in, int) or time.time() - signed_in > settings.JWT_SESSION_MAX_DAYS * 86400:
            raise InvalidToken(
                _("This sign-in is more than %(days)s days old: sign in again with your password.")
                % {"days": settings.JWT_SESSION_MAX_DAYS}
            )
        user = get_user_model().objects.filter(pk=refresh.get(api_settings.USER_ID_CLAIM)).first()
        if user is not None and token_revoked(refresh, user):
            raise InvalidToken(_("The password changed since this sign-in: sign in again with the new password."))
        return super().validate(attrs)
