"""Platforms: the only code that talks to GitHub or GitLab."""
