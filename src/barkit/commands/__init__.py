"""CLI glue: one module per `barkit` subcommand, kept thin; the work lives in the package's modules."""
