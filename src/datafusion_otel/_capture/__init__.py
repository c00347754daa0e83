"""Capture: what happens after a query ran, off its thread.

The query's thread only queues a job (`schedule`, `queue`); the capture worker then walks the
executed plan (`plan_walk`, `plan_shape`), renders and sanitizes its artifacts (`artifacts`,
`artifact_files`), and a DataFrame that captures itself when its stream ends (`frame`,
`stream_latch`) hands its plan over the same way.
"""
