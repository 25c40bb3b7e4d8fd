"""A Flask-SQLAlchemy shop (orders and stock) whose writes run in units of work: see ``app``."""
