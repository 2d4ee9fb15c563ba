"""The operator's web console and its HTTP API (issue 19): a deployable of its own."""
