"""Registered methods; importing this package registers each method module, as timm/models does."""
from methods import bgad, clip_logic, fusion, gcad, patchcore, regad, simplenet  # noqa: F401  (each registers itself)
from methods.registry import create_method, list_methods

__all__ = ["create_method", "list_methods"]
