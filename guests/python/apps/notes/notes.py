"""Notes: a small WSGI app on the standard library alone (sqlite3, html, urllib), for the
demo: `wasmbridge serve --wsgi notes:application` runs it in long-lived workers.

Its database is in $NOTES_DB (default /data/notes.db): the only writable directory it is
granted. One worker writes at a time in the demo (SQLite takes no locks under WASI).
"""
import html
import os
import sqlite3
from urllib.parse import parse_qs

DB = os.environ.get("NOTES_DB", "/data/notes.db")

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Notes</title>
<h1>Notes</h1>
<form method="post" action="{base}/">
  <input name="text" placeholder="a note" required maxlength="200">
  <button>Add</button>
</form>
<ul>{notes}</ul>
<p><small>Served by the WSGI app in a CPython worker on wasmbridge;
{count} notes in SQLite.</small></p>
"""


def database():
    connection = sqlite3.connect(DB)
    connection.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)")
    return connection


def application(environ, start_response):
    base = environ.get("SCRIPT_NAME", "")
    if environ.get("PATH_INFO", "/") not in ("", "/"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found\n"]
    with database() as db:
        if environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            form = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
            text = form.get("text", [""])[0].strip()[:200]
            if text:
                db.execute("INSERT INTO notes (text) VALUES (?)", (text,))
            start_response("303 See Other", [("Location", f"{base}/")])
            return [b""]
        rows = db.execute("SELECT text FROM notes ORDER BY id DESC LIMIT 50").fetchall()
        count = db.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
    notes = "".join(f"<li>{html.escape(text)}</li>" for (text,) in rows)
    body = PAGE.format(base=html.escape(base), notes=notes, count=count).encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]
