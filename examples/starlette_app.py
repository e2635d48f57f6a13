"""A Starlette web app and the broadcaster in one process, started and stopped together.

The broadcaster keeps its own port for WebSocket clients (8765 here); the web
app's endpoints publish through the broadcaster's Python API, so a
`block` channel makes the request wait for room (bounded, then 503).

Run it::

    pip install -e '.[examples]'
    python examples/starlette_app.py
    # in another terminal: watch orders arrive
    python -m websockets ws://127.0.0.1:8765/ws
    > {"op": "subscribe", "channel": "orders"}
    # and place one
    curl --json '{"item": "book", "qty": 1}' http://127.0.0.1:8000/orders
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broadcaster import Broadcaster, Config, PublishError

# How long a request may wait for room on the block channel before answering 503.
PUBLISH_TIMEOUT = 5.0


def default_config() -> Config:
    """The broadcaster's settings, in code: no TOML file needed."""
    return Config.build(
        server={"host": "127.0.0.1", "port": 8765},
        channels={"orders": {"strategy": "block", "queue_size": 1024}},
    )


def create_app(config: Config | None = None) -> Starlette:
    """The web app; its lifespan starts the broadcaster before serving and stops it after."""
    broadcaster = Broadcaster(config if config is not None else default_config())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with broadcaster:  # start() ... stop(): every task it started ends here
            yield

    async def place_order(request: Request) -> JSONResponse:
        order = await request.json()
        if not isinstance(order, dict) or "item" not in order:
            return JSONResponse({"error": "an order needs an 'item'"}, status_code=400)
        try:
            seq = await broadcaster.publish("orders", order, block_timeout=PUBLISH_TIMEOUT)
        except PublishError as exc:  # e.g. ChannelBlocked: no room in time
            headers = {} if exc.retry_after is None else {"Retry-After": "1"}
            status = 503 if exc.retry_after is not None else 400
            return JSONResponse(
                {"error": exc.code, "message": str(exc)}, status_code=status, headers=headers
            )
        return JSONResponse({"seq": seq}, status_code=201)

    app = Starlette(routes=[Route("/orders", place_order, methods=["POST"])], lifespan=lifespan)
    app.state.broadcaster = broadcaster
    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000)
