"""The seed incident done right in FastAPI: see ``app.py``; ``python -m examples.fastapi_app``."""
