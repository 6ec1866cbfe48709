"""The OpenAI-compatible HTTP server: thin FastAPI adapters over the services."""

from afinar.server.app import create_app

__all__ = ["create_app"]
