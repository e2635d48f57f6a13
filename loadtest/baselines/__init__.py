"""Naive reference servers that speak the wire protocol's core subset.

``broadcast`` and ``queue_per_subscriber`` are the designs a user could write in an
afternoon; ``trivial`` is the fastest fan-out we know how to write in Python and
exists to show the load tool's own ceiling. All three serve ``/ws`` with the ops
``subscribe``, ``unsubscribe``, ``publish`` and ``ping`` and per-channel ``seq``
starting at 1; none has bounded queues, flow control or slow-consumer handling.
"""
