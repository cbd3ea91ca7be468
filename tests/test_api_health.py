"""/healthz (database and channel layer) and the OpenAPI schema and docs."""

from types import SimpleNamespace

import pytest
from django.db import OperationalError
from django.test import Client

from chat import sql
from chat.serializers import upload_data


def test_healthz_ok_without_auth(db):
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "channel_layer": "ok"}
    assert "no-cache" in response["Cache-Control"]


class DownDatabase:
    def cursor(self):
        raise OperationalError("connection refused")


def test_healthz_503_when_the_database_is_down(db, monkeypatch):
    monkeypatch.setattr(sql, "connection", DownDatabase())
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "error", "channel_layer": "ok"}


@pytest.mark.parametrize(
    "backend", ["channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"]
)
def test_healthz_503_when_redis_is_down(db, settings, backend):
    # A real Redis channel layer pointed at a port nothing listens on.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": backend, "CONFIG": {"hosts": ["redis://127.0.0.1:9"]}}}
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "channel_layer": "error"}


@pytest.mark.parametrize("method", ["post", "delete"])
def test_healthz_is_read_only(db, method):
    assert getattr(Client(), method)("/healthz").status_code == 405


def test_schema_is_openapi(api, db):
    response = api().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/rooms/", "/api/rooms/{slug}/messages/", "/api/auth/token/", "/api/auth/logout/"} <= set(
        schema["paths"]
    )
    history = schema["paths"]["/api/rooms/{slug}/messages/"]["get"]
    assert {p["name"] for p in history["parameters"]} == {"slug", "before", "after", "limit", "around"}
    assert {p["name"] for p in schema["paths"]["/api/users/"]["get"]["parameters"]} == {"q", "limit"}
    search = schema["paths"]["/api/search/"]["get"]
    assert {p["name"] for p in search["parameters"]} == {"q", "room", "author", "before", "limit"}


def test_schema_lists_the_upload_endpoints(api, db):
    """They are plain async views, which drf-spectacular cannot read: `chat.api.schema` adds them."""
    schema = api().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    upload = schema["paths"]["/api/rooms/{slug}/uploads/"]["post"]
    assert "file" in upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"201", "413", "415"} <= set(upload["responses"])
    assert schema["components"]["schemas"]["Upload"]["required"] == ["id", "name", "size", "content_type", "url"]
    image = SimpleNamespace(pk=1, filename="a.png", size=9, content_type="image/png", thumb="t", width=2, height=1)
    assert set(schema["components"]["schemas"]["Upload"]["properties"]) == set(upload_data(image))
    assert {"jwtAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])
    for path in ("/api/uploads/{upload_id}/", "/api/uploads/{upload_id}/thumb/"):
        assert set(schema["paths"][path]["get"]["responses"]) == {"200", "302", "401", "404"}


def test_docs_page_points_at_the_schema(api, db):
    response = api().get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    # Swagger UI's start-up script is a URL of its own (no inline script: see the CSP).
    assert b'<script src="/api/docs/?script="></script>' in response.content
    script = api().get("/api/docs/?script=")
    assert script.status_code == 200 and b'url: "/api/schema/"' in script.content
