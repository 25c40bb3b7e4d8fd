"""End-to-end tests: the examples, the README and the built wheel, run as a user would."""
