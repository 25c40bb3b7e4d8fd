"""The FastAPI example with ``async def`` operations through an ``AsyncRunner``: see ``app.py``."""
