"""Uploads and downloads (PROTOCOL.md, "Files"): async views, so that the file work (parsing the
multipart body, decoding images, storing bytes) runs in threads of its own and only the short
database steps take the database thread, which every message write of the process shares."""

import asyncio
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication

from .. import selectors, services
from ..errors import INFRASTRUCTURE, ChatError, Invalid, NotFound, TooLarge, Unavailable
from ..events import run_sync
from ..serializers import upload_data
from ..uploads import files, storage

# Own threads: the default executor is shared with everything else `sync_to_async` offloads.
_pool = ThreadPoolExecutor(max_workers=settings.CHAT_UPLOAD_THREADS, thread_name_prefix="uploads")
CHUNK = 64 * 1024
INLINE = {"image/png", "image/jpeg", "image/gif", "image/webp"}
SAFE_DOWNLOAD = {"application/pdf", "application/zip", "application/gzip", "text/plain"}


async def _in_pool(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)


def _error(exc: ChatError) -> JsonResponse:
    response = JsonResponse({"detail": exc.detail, "code": exc.code}, status=exc.status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


def _authenticate(request):
    """The caller, as DRF's REST views find it (a JWT, else the session with its CSRF check)."""
    return Request(request, authenticators=[JWTAuthentication(), SessionAuthentication()]).user


async def _user_or_response(request):
    try:
        user = await run_sync(_authenticate)(request)
    except exceptions.APIException as exc:
        # simplejwt's InvalidToken carries {"detail", "code", "messages"}: sent as the REST views send it.
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": str(exc.detail), "code": exc.get_codes()}
        return None, JsonResponse(body, status=exc.status_code)
    if not user.is_authenticated:
        return None, JsonResponse(
            {"detail": _("Authentication credentials were not provided."), "code": "not_authenticated"}, status=401
        )
    return user, None


def _parsed_file(request):
    """The `file` field, read to the upload handlers' temporary file (off the database thread)."""
    upload = request.FILES.get("file")
    if upload is None:
        raise Invalid(_("file: send the file as the multipart field `file`."))
    if upload.size > settings.CHAT_MAX_UPLOAD_BYTES:
        raise TooLarge(
            _("file: %(size)s bytes; the limit is %(limit)s."), size=upload.size, limit=settings.CHAT_MAX_UPLOAD_BYTES
        )
    if upload.size == 0:
        raise Invalid(_("file: the file is empty."))
    return upload


def _stored(upload) -> tuple[files.Inspected, str, str]:
    inspected = files.inspect(upload.file, filename=upload.name or "", declared_type=upload.content_type or "")
    upload.file.seek(0)
    name, thumb = storage.save(upload.file, thumb=inspected.thumb)
    return inspected, name, thumb


def _filename(upload) -> str:
    name = (upload.name or "file").replace("\\", "/").rsplit("/", 1)[-1].strip() or "file"
    return "".join(ch for ch in name if ch.isprintable())[:255] or "file"


@csrf_exempt
async def upload_create_view(request, slug: str):
    if request.method != "POST":
        return JsonResponse({"detail": _("Use POST."), "code": "method_not_allowed"}, status=405)
    try:
        upload = await _in_pool(_parsed_file, request)  # before the CSRF check reads request.POST
        user, refusal = await _user_or_response(request)
        if refusal is not None:
            return refusal
        await run_sync(services.upload_check)(user=user, slug=slug)
        inspected, name, thumb = await _in_pool(_stored, upload)
        row = await run_sync(services.upload_create)(
            user=user,
            slug=slug,
            filename=_filename(upload),
            size=upload.size,
            inspected=inspected,
            name=name,
            thumb=thumb,
        )
    except ChatError as exc:
        return _error(exc)
    except INFRASTRUCTURE:
        return _error(Unavailable(_("The server cannot reach its database or Redis right now: retry.")))
    return JsonResponse(upload_data(row), status=201)


async def _download(request, upload_id: int, *, thumb: bool):
    if request.method not in ("GET", "HEAD"):
        return JsonResponse({"detail": _("Use GET."), "code": "method_not_allowed"}, status=405)
    user, refusal = await _user_or_response(request)
    if refusal is not None:
        return refusal
    try:
        upload = await run_sync(selectors.upload_for_user)(user, upload_id)
    except ChatError as exc:
        return _error(exc)
    name = upload.thumb if thumb else upload.name
    if not name:
        return _error(NotFound(_("No preview of file %(id)s."), id=upload_id))
    content_type = _thumb_type(upload) if thumb else upload.content_type
    inline = thumb or content_type in INLINE
    served_type = content_type if inline or content_type in SAFE_DOWNLOAD else "application/octet-stream"
    disposition = _disposition(upload.filename, inline=inline)
    if settings.CHAT_FILES_ACCEL_PREFIX and storage.is_file_system():
        response = HttpResponse(content_type=served_type)
        response["X-Accel-Redirect"] = settings.CHAT_FILES_ACCEL_PREFIX + name
    elif not storage.is_file_system():
        url = await _in_pool(_signed_url, name, served_type, disposition)
        response = HttpResponseRedirect(url)
    else:
        response = StreamingHttpResponse(_chunks(name), content_type=served_type)
        response["Content-Length"] = str(await _in_pool(default_storage.size, name))
    response["Content-Disposition"] = disposition
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


def _thumb_type(upload) -> str:
    return "image/jpeg" if upload.content_type == "image/jpeg" else "image/png"


def _disposition(filename: str, *, inline: bool) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    quoted = urllib.parse.quote(filename, safe="")
    return f"{'inline' if inline else 'attachment'}; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def _signed_url(name: str, content_type: str, disposition: str) -> str:
    """A short-lived signed URL of the store, whose response carries our headers."""
    return default_storage.url(
        name, parameters={"ResponseContentType": content_type, "ResponseContentDisposition": disposition}
    )


async def _chunks(name: str):
    handle = await _in_pool(default_storage.open, name, "rb")
    try:
        while chunk := await _in_pool(handle.read, CHUNK):
            yield chunk
    finally:
        await _in_pool(handle.close)


async def upload_file_view(request, upload_id: int):
    return await _download(request, upload_id, thumb=False)


async def upload_thumb_view(request, upload_id: int):
    return await _download(request, upload_id, thumb=True)
