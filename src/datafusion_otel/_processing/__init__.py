"""Processing: finished spans into rows, and their delivery.

Finished spans become rows of the diagnostics tables (`span_rows`, with each run's metadata:
`run_metadata`), a run's findings are recorded as its spans end (`run_findings`,
`plan_change`), and the rows are handed to the sinks (`delivery`).
"""
