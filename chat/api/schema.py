"""The OpenAPI schema's entries for what drf-spectacular cannot see: the upload endpoints are
plain async views (`chat.api.uploads`), written by hand here from PROTOCOL.md, "Files"."""

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
    "required": ["detail", "code"],
}
UPLOAD = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "size": {"type": "integer", "description": "bytes"},
        "content_type": {"type": "string"},
        "url": {"type": "string", "description": "the download, for users who may read the room"},
        "thumb_url": {"type": "string", "description": "images: a preview of at most 480 px, metadata stripped"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
    },
    "required": ["id", "name", "size", "content_type", "url"],
}
SECURITY = [{"jwtAuth": []}, {"cookieAuth": []}]


def _errors(*statuses: tuple[int, str]) -> dict:
    return {
        str(status): {
            "description": why,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status, why in statuses
    }


def _path_parameter(name: str, kind: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}, "description": description}


def _download(summary: str, what: str) -> dict:
    return {
        "get": {
            "operationId": summary.replace(" ", "_"),
            "summary": summary,
            "description": what,
            "tags": ["uploads"],
            "security": SECURITY,
            "parameters": [_path_parameter("upload_id", "integer", "the upload's id")],
            "responses": {
                "200": {
                    "description": "the file",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "302": {"description": "with S3 storage: a signed URL of the file"},
                **_errors(
                    (401, "not logged in"),
                    (404, "no such file, not for this user, or its message was deleted"),
                ),
            },
        }
    }


def add_uploads(result, generator, request, public):
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    result.setdefault("components", {}).setdefault("schemas", {}).update({"Error": ERROR, "Upload": UPLOAD})
    result["paths"]["/api/rooms/{slug}/uploads/"] = {
        "post": {
            "operationId": "uploads_create",
            "summary": "Upload a file to send in the room",
            "description": "Then send its `id` in a message's `attachments`. The size limit is enforced "
            "while the body arrives; an image must decode.",
            "tags": ["uploads"],
            "security": SECURITY,
            "parameters": [_path_parameter("slug", "string", "the room")],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    }
                },
            },
            "responses": {
                "201": {
                    "description": "stored",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Upload"}}},
                },
                **_errors(
                    (400, "invalid: no file field"),
                    (401, "not logged in"),
                    (403, "not allowed to send in this room"),
                    (404, "no such room"),
                    (410, "the room is archived"),
                    (413, "too_large: over CHAT_MAX_UPLOAD_BYTES"),
                    (415, "unsupported_type: an image that does not decode, or too large in pixels"),
                    (429, "rate_limited: see Retry-After"),
                    (503, "unavailable: the database or the storage cannot be reached"),
                ),
            },
        }
    }
    result["paths"]["/api/uploads/{upload_id}/"] = _download(
        "uploads file", "The file: images inline, everything else as an attachment."
    )
    result["paths"]["/api/uploads/{upload_id}/thumb/"] = _download("uploads thumb", "An image's preview.")
    return result
