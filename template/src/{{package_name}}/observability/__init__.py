"""Request ids, logs and (with the metrics feature) measurements of the service."""
