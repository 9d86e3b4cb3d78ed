"""Use cases of the gateway. They take ports in their constructors and know no framework or SDK."""
