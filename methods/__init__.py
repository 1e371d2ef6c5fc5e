"""Few-shot anomaly detection methods behind one protocol (`methods.base`); the registry imports the built-in
method modules on its first lookup, so importing this package imports no method."""
from methods.registry import create_method, list_methods

__all__ = ["create_method", "list_methods"]
