"""Local fake servers that stand in for remote services we cannot reach (loopback only)."""
