"""Plumbing shared by the services: settings, Kafka and Redis clients, metrics."""
