"""Rules as data: loading and validating rule files, the per-target matcher, lint, and the Postfix table importer. (Not the top-level rules/ folder of YAML files.)"""
