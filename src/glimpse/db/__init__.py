"""Database: SQLAlchemy 2 models, the engine/transaction helper, repositories, migrations."""
