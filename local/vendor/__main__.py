"""`python -m local.vendor`: serve the demo vendor API."""

from local.vendor.server import main

raise SystemExit(main())
