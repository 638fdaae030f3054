"""Arbiter: a self-hosted AI code reviewer for GitHub and GitLab, as a small bot framework."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("arbiter")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
