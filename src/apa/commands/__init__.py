"""One module per `apa` subcommand: add_arguments(parser) and run(args) -> exit code.

Commands parse arguments and call the library; the work itself lives in the library modules.
"""
