"""Files for the upload tests: real images made with Pillow, and the upload request."""

import io

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

GPS_TAG = 0x8825


def png(size=(40, 30), color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def jpeg_with_exif(size=(1200, 900)) -> bytes:
    """A JPEG carrying EXIF with a camera model and GPS coordinates."""
    image = Image.new("RGB", size, (10, 120, 200))
    exif = Image.Exif()
    exif[0x0110] = "SecretCam 3000"  # Model
    exif[GPS_TAG] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def upload(client, slug, content: bytes, name: str, content_type="application/octet-stream"):
    return client.post(
        f"/api/rooms/{slug}/uploads/",
        {"file": SimpleUploadedFile(name, content, content_type=content_type)},
        format="multipart",
    )
