"""The `bertforge` command line: one module per command, assembled by `bertforge.cli.main`."""
