"""Demo vendor API: a deterministic HTTP server of real-estate listing records.

It stands in for a third-party `http_api` source in the local stack, the tests and the
benchmarks, so it has to behave like a real vendor (filters, keyset pagination, upserts that
bump `last_modified`, the odd failure) while staying reproducible: every generated record is a
pure function of (dataset name, index, anchor), where the anchor is "the present" for the data.
On request it also misbehaves the way real sources do with time: an upsert's records may become
visible only some seconds after their stamp (`visible_after_s`), and a dataset's clock may run
ahead of or behind the server's (`POST /admin/clock`).

records.py generates records, datasets.py holds datasets and their queries, server.py serves
them. Run it with `python -m local.vendor --port 8081 [--dataset listings-a=5000 ...]`.
"""
