"""broadcaster's load tool: named scenarios against a WebSocket fan-out server.

Run ``python -m loadtest --help``; see loadtest/README.md for the scenarios,
the ``compare`` workflow that produces BENCHMARKS.md figures, and what every
reported field means.
"""

__version__ = "0.1.0"
