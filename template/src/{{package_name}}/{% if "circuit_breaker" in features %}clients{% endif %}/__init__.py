"""Clients of outbound HTTP dependencies, each a lifespan resource behind a circuit breaker."""
