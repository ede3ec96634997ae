"""Layer 1, configuration: field validation (`validate`), frozen-dataclass trees with typed overrides
and safe (de)serialisation (`tree`), plugin discovery (`plugins`) and running a named Python file
(`pyfile`). Imports nothing else of pixdiff."""
