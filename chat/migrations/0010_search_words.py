"""Word lists for search on PostgreSQL (chat/search.py, `search_words`): a GIN expression index of
each body's Latin words, and `chat_word`, every such word ever written, kept by triggers in the
writing transaction (so that the hand-written INSERT in chat/sql.py needs no change). A term of
Latin letters and digits lies inside one word of a body that holds it, so the words containing
it (a trigram lookup in the small `chat_word`) name every candidate: the index then ANDs one
list per term where the trigram index ANDed one per trigram. SQLite keeps its FTS5 table."""

from django.db import migrations

# A word: a run of ASCII letters and digits, of three characters or more, with a letter (runs of
# digits alone, numbers and ids, are left to the trigram index: they would fill `chat_word`).
# A run over 400 characters (a pasted key) is kept as 400-character pieces every 200, which
# hold every part of it a search can ask for (`q` is at most 200 characters) and fit the index
# entries' size limit. PARALLEL RESTRICTED keeps a read through the word index in one process:
# the planner takes the words of a search as independent, can expect thousands of matches
# where there are none, and then starts parallel workers, 5-10 ms before the first row.
WORDS = (
    "CREATE OR REPLACE FUNCTION chat_words(body text) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL RESTRICTED AS "
    "$$ SELECT coalesce(array_agg(DISTINCT substr(m[1], i, 400)), '{}') "
    "FROM regexp_matches(lower(body), '([a-z0-9]*[a-z][a-z0-9]*)', 'g') AS m, "
    "generate_series(1, greatest(length(m[1]) - 200, 1), 200) AS i WHERE length(m[1]) >= 3 $$"
)
# Words are added in order, so that two transactions adding the same new words never wait on each other in a cycle.
LEARN = (
    "INSERT INTO chat_word (word) SELECT DISTINCT w FROM {rows}, unnest(chat_words({body})) AS w "
    "ORDER BY w ON CONFLICT DO NOTHING"
)

POSTGRESQL = [
    WORDS,
    "CREATE TABLE IF NOT EXISTS chat_word (word text PRIMARY KEY)",
    "CREATE INDEX IF NOT EXISTS chat_word_trgm ON chat_word USING gin (word gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS message_body_words ON chat_message USING gin (chat_words(body))",
    # A batch's INSERT is one statement: its words are added once, from its transition table.
    "CREATE OR REPLACE FUNCTION chat_words_learn_inserted() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN {LEARN.format(rows='new_rows', body='new_rows.body')}; RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION chat_words_learn_edited() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN {LEARN.format(rows='(SELECT 1) AS one', body='NEW.body')}; RETURN NULL; END $$",
    "CREATE TRIGGER chat_message_words_insert AFTER INSERT ON chat_message "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION chat_words_learn_inserted()",
    "CREATE TRIGGER chat_message_words_edit AFTER UPDATE OF body ON chat_message FOR EACH ROW "
    "WHEN (OLD.body IS DISTINCT FROM NEW.body) EXECUTE FUNCTION chat_words_learn_edited()",
    LEARN.format(rows="chat_message", body="body"),
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER IF EXISTS chat_message_words_insert ON chat_message",
    "DROP TRIGGER IF EXISTS chat_message_words_edit ON chat_message",
    "DROP FUNCTION IF EXISTS chat_words_learn_inserted()",
    "DROP FUNCTION IF EXISTS chat_words_learn_edited()",
    "DROP INDEX IF EXISTS message_body_words",
    "DROP TABLE IF EXISTS chat_word",
    "DROP FUNCTION IF EXISTS chat_words(text)",
]


def run(statements):
    def operation(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for sql in statements:
                schema_editor.execute(sql)

    return operation


class Migration(migrations.Migration):
    dependencies = [("chat", "0009_search")]

    operations = [migrations.RunPython(run(POSTGRESQL), run(POSTGRESQL_REVERSE))]
