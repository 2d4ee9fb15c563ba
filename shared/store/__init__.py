"""The store: the database, the run ledger and the lock and run protocol, approvals."""
