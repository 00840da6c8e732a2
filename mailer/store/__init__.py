"""Every SQL statement, behind SQLAlchemy 2.0 Core: the engine (and the one place
database errors are translated), the tables (`models`) and their Alembic migrations, and one
module of statements per concern (subscribers, campaigns and deliveries, bounces, purge).

Imports `mailer.core` only: the store knows neither the CSV reader, the renderer nor SMTP.
"""
