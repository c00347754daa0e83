"""Implementations of the ``datafusion-otel`` commands (the parser lives in `datafusion_otel.cli`).

Every command takes the parsed arguments and returns an exit code; user errors are raised
as `datafusion_otel.store.StoreError` or `datafusion_otel.tpch.TpchError` and reported by the
command line as one line on stderr.
"""
