"""Uploaded files: what a file is (`files`), how it is stored and served (`storage`), and the
request size limit enforced while the body arrives (`limit`). No database access here: the rows
are written by `chat.services.uploads`."""
