"""The command line: parse, then call the library (autotune.app)."""
