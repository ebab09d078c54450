"""Ray side of the satellite messaging backend.

Each actor is a thin ``@ray.remote`` shell over a plain base class; the decisions
(who is a message for, what text fits in a packet) are pure functions.
"""
