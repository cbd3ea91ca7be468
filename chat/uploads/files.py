"""What an uploaded file is, from its content: the type is sniffed, never taken from its name or
the client's Content-Type, and an image counts as one only if Pillow decodes it.

Runs in the upload threads (`chat.api.uploads`), never on the database thread.
"""

import io
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext_lazy as _
from PIL import Image, ImageOps

from ..errors import ChatError

# Served inline (PROTOCOL.md, "Files"): Pillow's format name -> content type, thumbnail format.
IMAGE_TYPES = {"PNG": ("image/png", "PNG"), "JPEG": ("image/jpeg", "JPEG"), "GIF": ("image/gif", "PNG"),
               "WEBP": ("image/webp", "PNG")}  # fmt: skip
# Everything else is a download (`Content-Disposition: attachment`), labelled by its first bytes.
MAGIC = [
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
]
DECLARED_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".avif")
SNIFF_BYTES = 8192

Image.MAX_IMAGE_PIXELS = settings.CHAT_MAX_IMAGE_PIXELS  # Pillow's own guard, as a second line


class UnsupportedType(ChatError):
    code, status = "unsupported_type", 415


@dataclass
class Inspected:
    content_type: str
    width: int | None = None
    height: int | None = None
    thumb: bytes | None = None  # the preview, re-encoded without metadata
    thumb_type: str = ""


def inspect(file, *, filename: str, declared_type: str) -> Inspected:
    """The type of `file` (a seekable binary file) from its content, and a preview of an image.

    A file that claims to be an image (by name or Content-Type) must decode as PNG, JPEG, GIF or
    WebP within CHAT_MAX_IMAGE_PIXELS, else UnsupportedType: a renamed document would otherwise
    reach people as a broken picture. Anything else is accepted as a download.
    """
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    image = _image(file)
    if image is not None:
        return image
    if declared_type.lower().startswith("image/") or filename.lower().endswith(DECLARED_IMAGE_SUFFIXES):
        raise UnsupportedType(_("This image is not a PNG, JPEG, GIF or WebP picture the server can read."))
    return Inspected(content_type=_sniff(head))


def _sniff(head: bytes) -> str:
    for magic, content_type in MAGIC:
        if head.startswith(magic):
            return content_type
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the end of the sample
            return "application/octet-stream"
    # Text, HTML, SVG and scripts alike: labelled plain text, always a download.
    return "application/octet-stream" if b"\x00" in head else "text/plain"


def _image(file) -> Inspected | None:
    """The image `file` holds, with its preview; None if Pillow does not know it as an image."""
    try:
        with Image.open(file) as image:
            kind = IMAGE_TYPES.get(image.format)
            if kind is None:
                return None
            width, height = image.size
            # Read from the header, before any pixel is decoded.
            if width * height > settings.CHAT_MAX_IMAGE_PIXELS:
                raise UnsupportedType(
                    _("This image has %(pixels)s pixels; the limit is %(limit)s."),
                    pixels=width * height,
                    limit=settings.CHAT_MAX_IMAGE_PIXELS,
                )
            image.load()
            thumb, thumb_type = _thumbnail(image, kind[1])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnsupportedType(_("This image has too many pixels to open.")) from None
    except UnsupportedType:
        raise
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for a file it cannot read
        file.seek(0)
        return None
    file.seek(0)
    return Inspected(content_type=kind[0], width=width, height=height, thumb=thumb, thumb_type=thumb_type)


def _thumbnail(image: Image.Image, fmt: str) -> tuple[bytes, str]:
    """A preview at most CHAT_THUMB_PX on its longer side, turned upright, with no metadata:
    a new image of the pixels only, so EXIF (GPS included), ICC and comments stay behind."""
    image = ImageOps.exif_transpose(image)  # the first frame of an animation
    image.thumbnail((settings.CHAT_THUMB_PX, settings.CHAT_THUMB_PX))
    has_alpha = image.mode in ("RGBA", "LA", "P") and fmt == "PNG"
    pixels = image.convert("RGBA" if has_alpha else "RGB")
    clean = Image.new(pixels.mode, pixels.size)
    clean.paste(pixels)
    out = io.BytesIO()
    if fmt == "JPEG":
        clean.save(out, "JPEG", quality=82, optimize=True)
        return out.getvalue(), "image/jpeg"
    clean.save(out, "PNG", optimize=True)
    return out.getvalue(), "image/png"
