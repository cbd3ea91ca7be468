"""WebSocket authentication: a JWT from the Authorization header or `?token=`, else the session cookie.

A token that is present but invalid is an error (close 4401), never a fall-back to the
cookie. A cookie session counts only when the handshake's Origin is an allowed host, because
browsers send cookies on cross-site WebSocket handshakes. The outcome is `scope["user"]`
and, on failure, `scope["auth_error"]`; the consumer accepts and then closes with 4401 so
that a browser can read the code.
"""
from urllib.parse import parse_qs, urlparse

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http.request import validate_host
from django.utils.crypto import salted_hmac
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.utils import get_md5_hash_password


def token_from_scope(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


@database_sync_to_async
def user_for_id(user_id):
    return get_user_model().objects.filter(pk=user_id).first()


async def user_from_token(token: str):
    """(user, None) for a valid access token, else (AnonymousUser, reason)."""
    try:
        access = AccessToken(token)
    except TokenError:
        return AnonymousUser(), "invalid or expired token"
    user = await user_for_id(access.get(api_settings.USER_ID_CLAIM))
    if user is None:
        return AnonymousUser(), "unknown user"
    if token_revoked(access, user):
        return AnonymousUser(), "token issued before a password change: sign in again"
    return user, None


def token_revoked(token, user) -> bool:
    """simplejwt's CHECK_REVOKE_TOKEN rule, which its JWTAuthentication applies to REST requests:
    the token was issued under another password than the user's current one."""
    return api_settings.CHECK_REVOKE_TOKEN and token.get(api_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(
        user.password)


def session_mark(session_key: str | None) -> str | None:
    """Names a session on the channel layer, where the session key itself (a credential) must not travel."""
    return salted_hmac("chat.auth.session_mark", session_key).hexdigest() if session_key else None


def origin_allowed(scope) -> bool:
    origin = dict(scope.get("headers", [])).get(b"origin")
    if origin is None:
        return False
    host = urlparse(origin.decode("latin-1")).hostname
    return bool(host) and validate_host(host, settings.ALLOWED_HOSTS)


class _SessionUser:
    """Inside the session middleware: the session's user, if the origin may use the cookie."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if not origin_allowed(scope):
            scope["user"], scope["auth_error"] = AnonymousUser(), "no credentials (cookie sessions need an allowed Origin)"
        else:
            scope["user"] = await get_user(scope)
            if not scope["user"].is_authenticated:
                scope["auth_error"] = "no credentials"
            else:  # a password change made through this session keeps its sockets open
                scope["session_mark"] = session_mark(scope["session"].session_key)
        return await self.app(scope, receive, send)


class WebSocketAuthMiddleware:
    def __init__(self, app):
        self.app = app
        self.session_app = CookieMiddleware(SessionMiddleware(_SessionUser(app)))

    async def __call__(self, scope, receive, send):
        token = token_from_scope(scope)
        if token is None:
            return await self.session_app(dict(scope), receive, send)
        scope = dict(scope)
        scope["user"], error = await user_from_token(token)
        if error:
            scope["auth_error"] = error
        return await self.app(scope, receive, send)
