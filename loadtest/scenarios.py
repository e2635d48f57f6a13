"""Named scenarios: the parameters of one load run, with presets S1-S4, F10k and custom.

A scenario is a frozen value so that ``compare`` can run exactly the same one
against every target; command-line flags override fields through
:meth:`Scenario.override`. The presets follow issue 5's table; their durations are
short by default because the machine has two shared cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "PRESETS", "STRATEGIES", "Scenario", "SubscriberSpec", "get_scenario"]

STRATEGIES = ("drop-oldest", "drop-newest", "block", "conflate")
KINDS = ("fast", "slow")


@dataclass(frozen=True)
class SubscriberSpec:
    """One reading subscriber: which channel, fast or slow, and which worker process runs it."""

    index: int
    channel: str
    kind: str
    slow_rate: float
    worker: int


@dataclass(frozen=True)
class Scenario:
    """Everything that defines a run, independent of the target server."""

    name: str
    description: str
    subscribers: int = 100
    """Reading subscribers (fast + slow); stalled ones come on top."""
    processes: int = 2
    """Worker processes the reading subscribers are spread over."""
    channels: int = 1
    publishers: int = 1
    rate: float | None = 100.0
    """Messages per second per channel, or None for closed loop at the maximum rate."""
    size: int = 120
    """Approximate size in bytes of each delivered ``message`` event."""
    duration: float = 5.0
    """Seconds of publishing (for idle scenarios: seconds to hold the connections)."""
    slow: int = 0
    """How many of the subscribers read at ``slow_rate`` messages/s."""
    slow_rate: float = 10.0
    slow_rcvbuf: int = 16384
    """SO_RCVBUF of slow subscribers' sockets (0: the kernel's autotuning, which can
    absorb megabytes before the server sees any backlog)."""
    stalled: int = 0
    """Extra subscribers that stop reading at the TCP level right after subscribing."""
    idle: bool = False
    """Connect only (no subscribe, no publish): the S4 shape."""
    strategies: tuple[str, ...] = ()
    """Strategies for the broadcaster config, assigned to channels round-robin."""
    queue_size: int = 256
    high_watermark: int | None = None
    low_watermark: int | None = None
    slow_consumer_timeout: float = 5.0
    window: int = 64
    """Closed loop: most unacknowledged publishes per publisher."""
    lead: int = 100
    """Closed loop: most messages a channel may run ahead of its slowest fast subscriber."""
    drain: float = 3.0
    """Seconds to wait after publishing for subscribers to catch up before counting."""
    client: str = "picows"
    """Subscriber client library: ``picows``, ``websockets`` or ``sse`` (``GET /sse``)."""
    connect_concurrency: int = 100
    """Handshakes in flight per worker process."""
    stalled_rcvbuf: int = 4096
    """SO_RCVBUF of a stalled client's socket, set before connect."""
    compression: bool = False
    """Subscribers offer permessage-deflate (the websockets client: picows has no
    compression); the report counts the bytes that reached their sockets either way."""
    payload: str = "pad"
    """``pad``: ``data`` padded with "x" to ``size`` (compresses absurdly well);
    ``json``: an order book of about ``size`` bytes whose numbers change every message."""
    latency_every: int = 1
    """Measure latency on one message in this many per subscriber (every seq is still
    accounted); saturation runs sample so the client's ceiling stays above the server."""

    def override(self, **changes: Any) -> Scenario:
        """A copy with the given changes applied (unknown names are an error).

        Pass only what the user set: ``rate=None`` here means closed loop.
        """
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - valid
        if unknown:
            raise ValueError(f"unknown scenario parameter(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes).validated()

    def validated(self) -> Scenario:
        """Check ranges and combinations; raise ValueError with what was expected."""
        if self.subscribers < 0 or self.stalled < 0 or self.slow < 0:
            raise ValueError("subscriber counts must be >= 0")
        if self.slow > self.subscribers:
            raise ValueError(f"--slow ({self.slow}) exceeds --subscribers ({self.subscribers})")
        if self.processes < 1 or self.channels < 1 or self.publishers < 0:
            raise ValueError("processes and channels must be >= 1, publishers >= 0")
        if not self.idle and self.publishers < 1:
            raise ValueError("a publishing scenario needs at least one publisher")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0 (or 'max')")
        if self.duration <= 0 or self.drain < 0:
            raise ValueError("duration must be > 0 and drain >= 0")
        if self.slow_rcvbuf < 0 or self.stalled_rcvbuf < 1:
            raise ValueError("slow_rcvbuf must be >= 0 and stalled_rcvbuf >= 1")
        if self.slow and self.slow_rate <= 0:
            raise ValueError("slow_rate must be > 0")
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ValueError(f"unknown strategy {s!r}; expected one of {', '.join(STRATEGIES)}")
        if self.client not in ("picows", "websockets", "sse"):
            raise ValueError("client must be 'picows', 'websockets' or 'sse'")
        if self.compression and self.client != "websockets":
            raise ValueError(
                "--compression needs --client websockets (picows does not do permessage-deflate, "
                "SSE streams are never compressed)"
            )
        if self.payload not in ("pad", "json"):
            raise ValueError("payload must be 'pad' or 'json'")
        if self.window < 1 or self.lead < 1 or self.connect_concurrency < 1:
            raise ValueError("window, lead and connect_concurrency must be >= 1")
        return self

    @property
    def channel_names(self) -> list[str]:
        """The channels this scenario uses: ``load.0``, ``load.1``, ..."""
        return [f"load.{i}" for i in range(self.channels)]

    def strategy_of(self, channel_index: int) -> str | None:
        """The strategy configured for a channel, or None to leave the server default."""
        if not self.strategies:
            return None
        return self.strategies[channel_index % len(self.strategies)]

    def subscriber_specs(self) -> list[SubscriberSpec]:
        """Reading subscribers, spread round-robin over channels and worker processes.

        Slow subscribers are every k-th one rather than the first ``slow``, so they land
        on every channel and every worker.
        """
        names = self.channel_names
        specs: list[SubscriberSpec] = []
        step = self.subscribers / self.slow if self.slow else 0.0
        slow_at = {int(i * step) for i in range(self.slow)} if self.slow else set()
        for i in range(self.subscribers):
            kind = "slow" if i in slow_at else "fast"
            specs.append(
                SubscriberSpec(
                    index=i,
                    channel=names[i % len(names)],
                    kind=kind,
                    slow_rate=self.slow_rate if kind == "slow" else 0.0,
                    worker=i % self.processes,
                )
            )
        return specs

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly parameters (``rate`` None is written as ``"max"``)."""
        d = dataclasses.asdict(self)
        d["strategies"] = list(self.strategies)
        d["rate"] = "max" if self.rate is None else self.rate
        return d


PRESETS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="S1",
            description="saturation: 1,000 subscribers on one channel, ~120 B messages, "
            "closed-loop publishing; reports deliveries/s",
            subscribers=1000,
            rate=None,
            size=120,
            duration=10.0,
            latency_every=16,
        ),
        Scenario(
            name="S2",
            description="1,000 subscribers x 100 msg/s; reports latency p50/p90/p99/max",
            subscribers=1000,
            rate=100.0,
            size=120,
            duration=10.0,
        ),
        Scenario(
            name="S3",
            description="200 healthy + 20 stalled subscribers, 1 KB x 1,000 msg/s; reports RSS "
            "growth, healthy p99 and when the stalled ones were cut off",
            subscribers=200,
            stalled=20,
            rate=1000.0,
            size=1024,
            duration=10.0,
        ),
        Scenario(
            name="S4",
            description="10,000 idle connections; reports RSS per connection and accept time",
            subscribers=10000,
            processes=4,
            idle=True,
            publishers=0,
            duration=2.0,
            connect_concurrency=250,
        ),
        Scenario(
            name="F10k",
            description="fan-out to 10,000 subscribers x 10 msg/s; reports p99 latency",
            subscribers=10000,
            processes=4,
            rate=10.0,
            size=120,
            duration=10.0,
            connect_concurrency=250,
        ),
        Scenario(
            name="custom",
            description="everything from flags (defaults: 100 subscribers x 100 msg/s for 5 s)",
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """The preset called ``name`` (case-insensitive)."""
    for key, scenario in PRESETS.items():
        if key.lower() == name.lower():
            return scenario
    raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(PRESETS)}")
