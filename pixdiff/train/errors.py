class TrainingError(RuntimeError):
    """A run cannot start or continue (bad combination, resume mismatch, non-finite loss)."""
