"""data_access: the only door to PostgreSQL; domain RPCs for accounts, profiles and media."""
