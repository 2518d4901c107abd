"""What every service shares, once: settings, persistence, outbox, consumers, contracts, HTTP."""
