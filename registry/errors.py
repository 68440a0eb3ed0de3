class RegistryError(Exception):
    """Base of registry errors."""
