"""Where uploaded bytes live: Django's default storage (the file system under MEDIA_ROOT, or an
S3-compatible store), under names of their own that carry nothing of the client's file name."""

import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

PREFIX = "uploads"


def save(file, *, thumb: bytes | None) -> tuple[str, str]:
    """Store `file` (and its preview); returns their storage names (the preview's "" without one)."""
    key = uuid.uuid4().hex
    name = default_storage.save(f"{PREFIX}/{key[:2]}/{key}", file)
    thumb_name = default_storage.save(f"{PREFIX}/{key[:2]}/{key}.thumb", ContentFile(thumb)) if thumb else ""
    return name, thumb_name


def delete(*names: str) -> None:
    for name in names:
        if name:
            default_storage.delete(name)


def is_file_system() -> bool:
    return hasattr(default_storage, "path") and _has_path()


def _has_path() -> bool:
    try:
        default_storage.path(PREFIX)
    except NotImplementedError:
        return False
    return True
