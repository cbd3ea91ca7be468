"""Throttles for signing in, signing up and changing a password, shared by the API and the pages.

Each attempt counts against its client address and against the username it names (or, when
it names none, the signed-in user's), with DRF's rate windows in Django's cache: in Redis when
REDIS_URL is set, so the counts hold across processes. The API views list these classes;
the pages are wrapped in `throttle_page`. Rates: REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].
"""

import hashlib
import math
from functools import wraps

from django.shortcuts import render
from rest_framework.throttling import SimpleRateThrottle

from .usernames import normalize


def attempted_username(request) -> str:
    """The username a form or JSON body names, else the signed-in user's; in one case and form."""
    data = getattr(request, "data", None)  # DRF's parsed body; a page's request has only POST
    if data is None:
        data = request.POST
    username = data.get("username") if hasattr(data, "get") else None
    if not isinstance(username, str) or not username:
        user = getattr(request, "user", None)
        username = user.username if user is not None and user.is_authenticated else ""
    return normalize(username).casefold()


class AddressThrottle(SimpleRateThrottle):
    """Per client address: REMOTE_ADDR, or X-Forwarded-For as far as DJANGO_NUM_PROXIES trusts it."""

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class UsernameThrottle(SimpleRateThrottle):
    """Per account, so that guesses spread over many addresses still meet a limit."""

    def get_cache_key(self, request, view):
        username = attempted_username(request)
        if not username:
            return None
        digest = hashlib.sha256(username.encode()).hexdigest()[:32]
        return self.cache_format % {"scope": self.scope, "ident": f"user-{digest}"}


class LoginAddressThrottle(AddressThrottle):
    scope = "login"


class LoginUsernameThrottle(UsernameThrottle):
    scope = "login"


class RegisterAddressThrottle(AddressThrottle):
    scope = "register"


class RegisterUsernameThrottle(UsernameThrottle):
    scope = "register"


LOGIN = [LoginAddressThrottle, LoginUsernameThrottle]
REGISTER = [RegisterAddressThrottle, RegisterUsernameThrottle]


def throttle_page(throttle_classes):
    """Decorate a page view: a POST beyond any of the throttles gets the 429 page, and the view never runs."""

    def decorate(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method == "POST":
                # Like DRF's APIView.check_throttles: every throttle counts the attempt it allows.
                waits = [
                    throttle.wait()
                    for throttle in (cls() for cls in throttle_classes)
                    if not throttle.allow_request(request, None)
                ]
                if waits:
                    retry_after = max(1, math.ceil(max(wait or 0 for wait in waits)))
                    response = render(request, "registration/throttled.html", {"retry_after": retry_after}, status=429)
                    response["Retry-After"] = str(retry_after)
                    return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
