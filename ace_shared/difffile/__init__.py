"""The diff file: its JSON format (read, streamed, and written in one module), the checked file,
a SQLite spool of its rows for keyed look-ups, a streamed view, CSV and HTML."""
