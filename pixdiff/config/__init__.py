"""Configuration: field validation (`validate`), frozen-dataclass trees with typed overrides and
safe (de)serialisation (`tree`), plugin discovery (`plugins`), running a named Python file
(`pyfile`) and lazy package exports (`exports`). Imports nothing else of pixdiff."""

from pixdiff.config.exports import exports, lazy_exports

_EXPORTS = {
    **exports("pixdiff.config.validate", "ConfigError", "check_fields", "positive", "require"),
    **exports("pixdiff.config.tree", "replace", "apply_overrides", "to_dict", "from_dict"),
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
