"""Using the judge: the end-to-end run with content-hash caching, its report, and the registry gate."""
