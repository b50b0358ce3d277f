"""Bulwark: generate and maintain production FastAPI services from the Copier template."""

from importlib.metadata import version

__version__ = version("bulwark")
