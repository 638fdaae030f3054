"""Prompt templates (text files) and the loader that renders them."""
