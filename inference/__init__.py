"""Photo → 3D body avatar pipeline: pure computation, no web, no queue, no database."""
from inference.errors import AvatarError, CancelledError, InputError, MissingWeightError
from inference.types import Subject

__all__ = ["AvatarError", "CancelledError", "InputError", "MissingWeightError", "Subject"]
__version__ = "0.1.0"
