"""CLI sub-commands, one module each (sessionrec.cli registers them)."""
