"""The pure rules: flows and windows, record versions, schedules, Re-specs queries, leases."""
