"""Helpers shared by the integration tests: servers, raw clients, waiting on state."""
