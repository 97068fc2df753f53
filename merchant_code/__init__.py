"""merchant-code: one shop, one QR code, three views."""

__version__ = "0.1.0"
