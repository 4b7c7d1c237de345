"""The YAML profile: schema and store, matching, building, export. Never imports the search side."""
