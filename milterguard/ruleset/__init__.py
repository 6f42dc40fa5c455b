"""Rules as data: loading and validating rule files (``rules``), the
per-target matcher and the message's regex time (``matcher``, ``budget``),
lint and regex risk analysis (``lint``, ``regexrisk``), and the Postfix
table importer (``postfix_import``, ``postfix_patterns``). Not to be
confused with the top-level rules/ folder of YAML files."""
