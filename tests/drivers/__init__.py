"""The driver matrix: every failure scenario on each of the six MySQL drivers."""
