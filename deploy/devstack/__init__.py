"""Local infrastructure without Docker: PostgreSQL from the machine's binaries, Apache Kafka
(KRaft) from its official Maven Central artifacts, and the `make run` process supervisor."""
