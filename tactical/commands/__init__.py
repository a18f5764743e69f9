"""One module per `tactical` command; each exposes add_parser(subparsers)."""
