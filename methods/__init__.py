"""Registered methods; importing this package registers each method module, as timm/models does."""
from methods import fusion, gcad, patchcore, regad  # noqa: F401  (each module registers itself)
from methods.registry import create_method, list_methods

__all__ = ["create_method", "list_methods"]
