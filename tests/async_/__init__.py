"""The async runner against real databases: cancellation, event-loop lag, async chaos."""
