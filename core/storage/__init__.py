"""Storage: the database engine and units of work, the tables, the blob store, the audit log, stored
webhook updates and the schema migrations."""
