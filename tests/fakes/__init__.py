"""Local fake servers (127.0.0.1 only) that stand in for remote services at the network boundary."""
