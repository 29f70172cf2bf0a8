"""rst-triage: find who sent the TCP reset."""

__version__ = "0.1.0"
