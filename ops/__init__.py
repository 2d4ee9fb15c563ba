"""The operator's command: one module per job (sources, runs, approvals, dead letters,
status, audit), its configuration and its rendering. It runs against the embedded stack and
AWS alike, and imports nothing of the embedded stack (`local/`)."""
