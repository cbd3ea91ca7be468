"""WebSocket authentication: a JWT from the Authorization header or `?token=`, else the session cookie.

A token that is present but invalid is an error (close 4401), never a fall-back to the
cookie. A cookie session counts only when the handshake's Origin is an allowed origin (scheme,
host and port), because browsers send cookies on cross-site WebSocket handshakes. The outcome is `scope["user"]`
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
from django.http.request import split_domain_port, validate_host
from django.utils.crypto import salted_hmac
from django.utils.http import is_same_domain
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
        user.password
    )


def session_mark(session_key: str | None) -> str | None:
    """Names a session on the channel layer, where the session key itself (a credential) must not travel."""
    return salted_hmac("chat.auth.session_mark", session_key).hexdigest() if session_key else None


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of `scheme://netloc`, the port filled in; None if it is not a web origin."""
    try:
        parts = urlparse(f"{scheme}://{netloc}")
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    return (scheme, parts.hostname, port) if scheme in DEFAULT_PORTS and parts.hostname else None


def _handshake_scheme(scope, headers: dict) -> str:
    """The scheme the browser used: `https` for wss, or behind a TLS proxy that says so in
    SECURE_PROXY_SSL_HEADER (as Django's `request.is_secure()` reads it)."""
    if scope.get("scheme") == "wss":
        return "https"
    if settings.SECURE_PROXY_SSL_HEADER:
        name, value = settings.SECURE_PROXY_SSL_HEADER
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        if headers.get(header, b"").decode("latin-1").split(",")[0].strip() == value:
            return "https"
    return "http"


def allowed_origins(scope, headers: dict) -> list[tuple[str, str, int]]:
    """CSRF_TRUSTED_ORIGINS, and the handshake's own origin (its scheme and Host) when that
    Host is one of ALLOWED_HOSTS: the pages' own origin, whatever port they are served on."""
    origins = [_origin_tuple(*origin.split("://", 1)) for origin in settings.CSRF_TRUSTED_ORIGINS if "://" in origin]
    host = headers.get(b"host", b"").decode("latin-1")
    own = _origin_tuple(_handshake_scheme(scope, headers), host)
    if own is not None and validate_host(split_domain_port(host)[0], settings.ALLOWED_HOSTS):
        origins.append(own)
    return [origin for origin in origins if origin is not None]


def origin_allowed(scope) -> bool:
    """Whether the handshake's Origin equals an allowed origin in scheme, host and port. A
    cookie is sent whatever page opens the socket, so a near match (another port of the same
    host: another site) must not do. `*.example.com` in CSRF_TRUSTED_ORIGINS covers subdomains."""
    headers = dict(scope.get("headers", []))
    origin = headers.get(b"origin")
    if origin is None or b"://" not in origin:
        return False
    parsed = _origin_tuple(*origin.decode("latin-1").split("://", 1))
    if parsed is None:
        return False
    scheme, host, port = parsed
    return any(
        scheme == allowed[0]
        and port == allowed[2]
        and (host == allowed[1] or (allowed[1].startswith("*.") and is_same_domain(host, allowed[1][1:])))
        for allowed in allowed_origins(scope, headers)
    )


class _SessionUser:
    """Inside the session middleware: the session's user, if the origin may use the cookie."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if not origin_allowed(scope):
            scope["user"], scope["auth_error"] = (
                AnonymousUser(),
                "no credentials (cookie sessions need an allowed Origin)",
            )
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
