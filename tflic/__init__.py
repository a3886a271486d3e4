"""tflic: learned image compression with Swin transforms and a transformer context model."""

import os

__version__ = "0.1.0"

# The bundled model: its SavedModel (`model`), LiteRT export (`lite`) and model card.
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")
