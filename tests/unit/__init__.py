"""Unit tests of the pure core: synchronous, explicit times, no sockets, no sleeps."""
