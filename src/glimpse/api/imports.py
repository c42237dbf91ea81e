"""Placeholder: filled in by its owner."""

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
