"""One module per `lab` subcommand; each has register(subparsers)."""
