"""The Lambda runtime: the SQS consumer shell, task callbacks, events, contracts, settings,
observability, AWS clients and secrets."""
