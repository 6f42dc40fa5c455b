"""What is kept: the database and migrations, the hits store, bans, exporters, and the log scanner."""
