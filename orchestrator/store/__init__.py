"""The store owns SQL: tables, schema upgrades and every query the apps run."""
