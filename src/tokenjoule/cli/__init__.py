"""The `tokenjoule` command line. One module per subcommand; heavy imports inside commands."""
