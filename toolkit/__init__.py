"""Deploy Keras and TFLite models as int8 C code, bit-exact with TFLite Micro."""

from toolkit.errors import ToolkitError

__all__ = ["ToolkitError"]
__version__ = "0.1.0"
