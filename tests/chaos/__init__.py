"""Chaos testing: a fault-injecting MySQL-protocol TCP proxy and the tests that drive it."""
