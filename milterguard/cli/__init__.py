"""The `milterguard` command: one module per sub-command."""
