"""Message search indexes (chat/search.py), per database: on PostgreSQL a `pg_trgm` GIN index on
the body and a GIN index of its character pairs; on SQLite an FTS5 trigram table over the bodies of messages not deleted, kept by
triggers in the writing transaction (so that the hand-written INSERT in chat/sql.py needs no change)."""

from django.db import migrations

POSTGRESQL = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS message_body_trgm ON chat_message USING gin (body gin_trgm_ops)",
    # A two-character term (a Chinese word, most often) has no trigram: the body's distinct
    # lower-cased character pairs, in an expression index, answer it instead.
    "CREATE OR REPLACE FUNCTION chat_bigrams(body text) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS "
    # The pairs at even and at odd offsets, each read once by a regular expression: `substr` at
    # every offset rescans the text from its start (UTF-8), quadratic in the body's length.
    "$$ SELECT coalesce(array_agg(DISTINCT m[1]), '{}') FROM (SELECT lower(body) AS b) s, "
    "LATERAL (SELECT regexp_matches(s.b, '(..)', 'g') UNION ALL SELECT regexp_matches(substr(s.b, 2), '(..)', 'g')) "
    "AS p(m) $$",
    "CREATE INDEX IF NOT EXISTS message_body_bigrams ON chat_message USING gin (chat_bigrams(body))",
]
POSTGRESQL_REVERSE = [
    "DROP INDEX IF EXISTS message_body_trgm",
    "DROP INDEX IF EXISTS message_body_bigrams",
    "DROP FUNCTION IF EXISTS chat_bigrams(text)",
]

SQLITE = [
    "CREATE VIRTUAL TABLE chat_message_fts USING fts5("
    "body, content='chat_message', content_rowid='id', tokenize='trigram')",
    "INSERT INTO chat_message_fts(rowid, body) SELECT id, body FROM chat_message WHERE NOT deleted",
    "CREATE TRIGGER chat_message_fts_insert AFTER INSERT ON chat_message WHEN NOT new.deleted BEGIN "
    "INSERT INTO chat_message_fts(rowid, body) VALUES (new.id, new.body); END",
    "CREATE TRIGGER chat_message_fts_delete AFTER DELETE ON chat_message WHEN NOT old.deleted BEGIN "
    "INSERT INTO chat_message_fts(chat_message_fts, rowid, body) VALUES ('delete', old.id, old.body); END",
    # One trigger for both halves of an update, so that the old row leaves before the new one enters.
    "CREATE TRIGGER chat_message_fts_update AFTER UPDATE OF body, deleted ON chat_message BEGIN "
    "INSERT INTO chat_message_fts(chat_message_fts, rowid, body) SELECT 'delete', old.id, old.body "
    "WHERE NOT old.deleted; "
    "INSERT INTO chat_message_fts(rowid, body) SELECT new.id, new.body WHERE NOT new.deleted; END",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS chat_message_fts_insert",
    "DROP TRIGGER IF EXISTS chat_message_fts_delete",
    "DROP TRIGGER IF EXISTS chat_message_fts_update",
    "DROP TABLE IF EXISTS chat_message_fts",
]


def run(statements):
    def operation(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return operation


class Migration(migrations.Migration):
    dependencies = [("chat", "0008_uploads")]

    operations = [
        migrations.RunPython(
            run({"postgresql": POSTGRESQL, "sqlite": SQLITE}),
            run({"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
