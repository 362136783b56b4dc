"""A self-hosted endpoint for Vercel log drains."""

__version__ = "0.1.0"
