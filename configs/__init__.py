"""Configuration files (JSON), installed as the package tflic.configs."""
