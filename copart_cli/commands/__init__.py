"""The command line: one thin module per subcommand (options, messages, exit codes). Each
imports its job inside the command function, so that ``copart --help`` loads no torch."""
