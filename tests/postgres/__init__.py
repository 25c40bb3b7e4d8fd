"""PostgreSQL as a first-class database: classification, bounds, lost COMMITs, failover, chaos."""
