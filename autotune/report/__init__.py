"""Read-only views of a study: HTML, PNG, console tables and the live progress display."""
