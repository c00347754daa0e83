"""Sanitize: literals out of every text.

The literal values of a query are read from its SQL text and plans (`literals`,
`sql_literals`, under the dialect noted for the text: `dialect`) and remembered for its
exceptions (`remember`); every rendering of them (`renderings`) is replaced in plan texts,
error texts and log records (`redact`, `matcher`, `errors`), and a text that cannot be
sanitized is withheld.
"""
