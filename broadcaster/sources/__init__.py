"""Sources: feeds that publish into channels from inside the server.

A source is anything with a `name` and an `async run(publish)` that publishes
until cancelled; `SourceRunner` starts each configured source and restarts a
failed one with exponential backoff. `publish` honours `block` channels by
awaiting, so a blocked channel stops its source from producing.
"""

from __future__ import annotations

from broadcaster.sources.base import SOURCE_KINDS, Publish, Source, SourceRunner, build_source

__all__ = ["SOURCE_KINDS", "Publish", "Source", "SourceRunner", "build_source"]
