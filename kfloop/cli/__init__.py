"""The ``kfloop`` command line: one module per command group (``main`` builds the parser).

Thin glue: flags are read and turned into ``Settings`` here, and the work is done by the packages below.
Each command imports what it needs when it runs, so ``kfloop --help`` imports nothing heavy.

May import everything.
"""
