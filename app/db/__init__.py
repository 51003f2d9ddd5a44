"""Persistence: SQLAlchemy models, the session factory and the queries the services use."""
