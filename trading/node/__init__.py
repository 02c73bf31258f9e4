"""The trading node: modes, venues, kill switch and state, ops status."""
