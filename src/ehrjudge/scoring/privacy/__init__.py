"""Privacy: membership and attribute inference attacks against the synthetic set."""
