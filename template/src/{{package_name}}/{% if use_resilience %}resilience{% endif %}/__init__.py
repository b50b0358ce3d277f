"""Resilience guards the gate runs (timeout, shedding, rate limits) and breakers with retries.

Each concern is one module with one small object; `main.py` hands the enabled ones to the gate
(DESIGN.md §3, §5; docs/resilience.md).
"""
