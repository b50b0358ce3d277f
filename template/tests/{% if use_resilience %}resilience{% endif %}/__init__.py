"""Tests of the resilience guards, breakers and retries."""
