"""What the rules say: the rules file, path groups, limits, and the decision engine."""
