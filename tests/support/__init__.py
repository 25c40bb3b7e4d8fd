"""Helpers shared by the test layers (engines made like a user would)."""
