"""Server-rendered pages: registration, the room list and the room page that starts the browser client.

Views parse input, call one service or selector and render. Service errors become an
error page (or form errors) with the error's HTTP status.
"""

from functools import wraps
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from . import auth, selectors, services, system_text, throttles
from .errors import ChatError
from .forms import DirectForm, PasswordChangeForm, RegisterForm, RoomCreateForm, add_service_error
from .serializers import message_data, timestamp

HISTORY_PAGE = 50


def refused(response, exc: ChatError):
    """`response` to a refused request, saying when to retry as the API does (over a budget: 429)."""
    response.status_code = exc.status
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


def chat_errors(view):
    """Render a ChatError (no such room, archived, forbidden, ...) as a page with its status."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except ChatError as exc:
            return refused(render(request, "chat/error.html", {"error": exc}), exc)

    return wrapped


@throttles.throttle_page(throttles.REGISTER)
def register(request):
    if not settings.CHAT_REGISTRATION_OPEN:
        return render(request, "registration/register.html", {"closed": True}, status=403)
    form = RegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.user_register(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                email=form.cleaned_data["email"],
            )
        except ChatError as exc:
            add_service_error(form, exc)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/register.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@throttles.throttle_page(throttles.LOGIN)  # the old password must not be guessable here either
def password_change(request):
    """Change the password: every other session, token and socket of the user ends; this session stays."""
    form = PasswordChangeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.password_change(
                user=request.user,
                old_password=form.cleaned_data["old_password"],
                new_password=form.cleaned_data["new_password1"],
                keep_session=auth.session_mark(request.session.session_key),
            )
        except ChatError as exc:
            add_service_error(form, exc)
        else:
            update_session_auth_hash(request, user)
            messages.success(request, _("Your password is changed. Your other sessions and devices are signed out."))
            return redirect("chat:rooms")
    return render(request, "registration/password_change.html", {"form": form}, status=400 if form.errors else 200)


def client_config(request, **extra) -> dict:
    """What every page's client needs to know: the user, where to connect and the limits."""
    return {
        "user": {"id": request.user.pk, "username": request.user.username, "isStaff": request.user.is_staff},
        "socketPath": "/ws/chat/",
        "loginUrl": f"{settings.LOGIN_URL}?next={quote(request.get_full_path())}",
        "maxBody": settings.CHAT_MAX_BODY,
        **extra,
    }


def _room_list(request, *, create_form=None, direct_form=None, status=200):
    rooms = list(selectors.rooms_for_user(request.user))
    context = {
        "my_rooms": [r for r in rooms if r.member],
        "public_rooms": [r for r in rooms if not r.member],
        "create_form": create_form or RoomCreateForm(),
        "direct_form": direct_form or DirectForm(),
        "client": client_config(request, page="rooms"),
    }
    return render(request, "chat/room_list.html", context, status=status)


@login_required
def directory(request):
    """Public rooms and the user's own, filtered by a name or slug fragment."""
    query = request.GET.get("q", "").strip()[:100]
    rooms = selectors.rooms_for_user(request.user)
    if query:
        rooms = rooms.filter(Q(name__icontains=query) | Q(slug__icontains=query) | Q(topic__icontains=query))
    rooms = [room for room in rooms.order_by("name") if room.kind != "direct"]
    return render(
        request,
        "chat/directory.html",
        {"rooms": rooms, "query": query, "client": client_config(request, page="directory")},
    )


@login_required
def profile(request):
    return render(request, "chat/profile.html", {"client": client_config(request, page="profile")})


@login_required
def mentions(request):
    """The mentions inbox: a shell the client fills from GET /api/mentions/, newest first."""
    rooms = {room.slug: room.name for room in selectors.rooms_for_user(request.user) if room.member}
    return render(request, "chat/mentions.html", {"client": client_config(request, page="mentions", rooms=rooms)})


@login_required
def room_list(request):
    return _room_list(request)


@login_required
@require_POST
def room_create(request):
    form = RoomCreateForm(request.POST)
    if form.is_valid():
        try:
            room = services.room_create(user=request.user, **form.cleaned_data)
        except ChatError as exc:
            add_service_error(form, exc)
            return refused(_room_list(request, create_form=form), exc)
        else:
            return redirect("chat:room", slug=room.slug)
    return _room_list(request, create_form=form, status=400)


@login_required
@require_POST
def direct(request):
    form = DirectForm(request.POST)
    if form.is_valid():
        try:
            room = services.direct_room(user=request.user, username=form.cleaned_data["username"])
        except ChatError as exc:
            add_service_error(form, exc)
            return refused(_room_list(request, direct_form=form), exc)
        else:
            return redirect("chat:room", slug=room.slug)
    return _room_list(request, direct_form=form, status=400)


@login_required
@chat_errors
def room(request, slug):
    room, membership = selectors.room_for_user(request.user, slug)
    history, has_more = selectors.message_history(room, limit=HISTORY_PAGE)
    client = client_config(
        request,
        page="room",
        member=membership is not None,
        room={"slug": room.slug, "name": room.name, "kind": room.kind, "topic": room.topic, "locked": room.locked},
        role=membership.role if membership else None,
        canModerate=bool(membership and membership.can_moderate) or request.user.is_staff,
        mutedUntil=timestamp(membership.muted_until) if membership and membership.is_muted() else None,
        lastReadId=membership.last_read_id if membership else 0,
        # Read with the room, before the history: every change up to it is in the page.
        changeSeq=room.change_seq,
        history=[message_data(m) for m in history],
        hasMore=has_more,
        historyUrl=f"/api/rooms/{room.slug}/messages/",
        systemTexts=system_text.client_templates(),
    )
    context = {"room": room, "membership": membership, "history": history, "has_more": has_more, "client": client}
    return render(request, "chat/room.html", context)


@login_required
@require_POST
@chat_errors
def room_join(request, slug):
    services.room_join(user=request.user, slug=slug)
    return redirect("chat:room", slug=slug)


@login_required
@require_POST
@chat_errors
def room_leave(request, slug):
    services.room_leave(user=request.user, slug=slug)
    return redirect("chat:rooms")
