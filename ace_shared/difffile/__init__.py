"""The diff file: its JSON format (read and written in one module), a streamed view, CSV and HTML."""
