"""What the services share besides the engine: settings, the clock, Kafka and Redis clients, the read
model's keys and reads, the definitions feed, rules files, metrics, signed webhooks and retries
(webhooks.py, resilience.py), the plain consumers' loop plumbing (consumers.py); the campaign and
playbook stores, the report reader, caps and step keys the ingest API and the notifier both use. No
service package is imported from here (tests/unit/test_dependencies.py)."""
