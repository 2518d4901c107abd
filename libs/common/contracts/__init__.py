"""Event payloads: the public contract of every topic. Versioned by topic name (`.v1`)."""
