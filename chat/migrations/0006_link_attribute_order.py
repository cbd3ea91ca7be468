"""Stored `html` takes the contract's link attribute order (`rel` before `target`, chat.markup).

In the sanitizer's output a `>` inside text is always `&gt;`, so the pattern, which ends with one,
matches link tags only.
"""

from django.db import migrations

NH3_ORDER = ' target="_blank" rel="nofollow noopener noreferrer">'
CONTRACT_ORDER = ' rel="nofollow noopener noreferrer" target="_blank">'


def _replace(old: str, new: str) -> str:
    return f"UPDATE chat_message SET html = REPLACE(html, '{old}', '{new}') WHERE html LIKE '%{old}%'"


class Migration(migrations.Migration):
    dependencies = [("chat", "0005_conversations")]

    operations = [
        migrations.RunSQL(_replace(NH3_ORDER, CONTRACT_ORDER), reverse_sql=_replace(CONTRACT_ORDER, NH3_ORDER)),
    ]
