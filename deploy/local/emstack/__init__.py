"""The local stack without Docker: Kafka (KRaft), Redis, Prometheus, Alertmanager."""
