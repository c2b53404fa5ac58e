"""Operator tools behind the CLI and the dashboard: replay and dead letters, operator commands, the
Amazon access check, the settings' documentation."""
