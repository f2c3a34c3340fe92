"""sessionrec package."""
