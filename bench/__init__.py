"""`make bench`: sourceflow's speed and cost, measured on the embedded stack (not in tests)."""
