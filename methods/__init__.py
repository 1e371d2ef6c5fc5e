"""Registered methods; importing this package registers each method module, as timm/models does."""
from methods import patchcore  # noqa: F401  (registers "patchcore")
from methods.registry import create_method, list_methods

__all__ = ["create_method", "list_methods"]
