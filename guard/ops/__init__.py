"""Operating guard: the command line, metrics and decision log, explain and top."""
