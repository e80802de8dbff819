"""Pure rules of conversations: no I/O, unit-tested alone."""
