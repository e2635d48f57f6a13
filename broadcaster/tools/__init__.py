"""Small command-line tools for trying the server out (`python -m broadcaster.tools.NAME`)."""
