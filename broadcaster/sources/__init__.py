"""Sources: feeds that publish into channels from inside the server.

A source is anything with a `name`, a `channel` and an `async run(publish)`
that publishes until its input ends or it is cancelled; `SourceRunner` starts
each configured source and restarts a failed one with exponential backoff.
`publish` honours `block` channels by awaiting, so a blocked channel stops
its source from reading. Built-in kinds (`[sources.NAME] kind = ...`):
`demo_ticker`, `file`, `stdin`, `redis_stream`, `redis_pubsub`.
"""

from __future__ import annotations

from broadcaster.sources.base import SOURCE_KINDS, Publish, Source, SourceRunner, build_source

__all__ = ["SOURCE_KINDS", "Publish", "Source", "SourceRunner", "build_source"]
