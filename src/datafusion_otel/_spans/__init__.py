"""Spans: artifacts onto spans, and runs' routing.

Captured artifacts become span events and ``datafusion.capture`` / operator child spans
(`emit`, `operator_spans`, with payloads that stay off the exported event: `payloads`), on the
span of the run they belong to, wherever the query ran (`routing`).
"""
