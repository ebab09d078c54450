"""The message log and durable outbox: one row per message the system accepts or refuses."""
