"""LASeR engine: train and serve LLMs with several reward models, one picked per instance by a bandit."""

__version__ = "0.1.0"
