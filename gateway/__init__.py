"""The gateway: the only client-facing service."""
