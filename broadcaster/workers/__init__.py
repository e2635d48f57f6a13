"""`broadcaster serve --workers N`: several processes serving one port, one set of channels.

See docs/ARCHITECTURE.md ("Workers") for the design: the supervisor process
owns the local bus (seq, history, the cross-worker view), each worker
process is a whole `Broadcaster` whose broker is the bus.
"""
