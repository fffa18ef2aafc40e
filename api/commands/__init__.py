"""The `ketafollow` command's commands, one module per group; `api.cli` parses the command line."""
