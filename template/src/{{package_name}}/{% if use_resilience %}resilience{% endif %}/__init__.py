"""Resilience guards the gate runs (timeout, shedding, rate limits) and breakers with retries.

Each concern is one module (or package) with one small object, and its `wire` hands it to
the gate, the one pure-ASGI frame that runs them all: nested middleware costs more per
request than the whole budget of the service's own layers.
"""
