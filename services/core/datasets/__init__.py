from services.core.datasets.registry import Dataset, Field, Registry, load_registry

__all__ = ["Dataset", "Field", "Registry", "load_registry"]
