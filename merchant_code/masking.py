"""Masking of personal data for staff views without the `pii:read` permission.

The shape follows what Chinese public-service systems print: a name keeps its family name
(`张*`), a mobile number its first three and last four digits (`138****1234`), an ID number its
region code and last four characters, a certificate number its first and last two.
"""

from __future__ import annotations


def name(value: str | None) -> str | None:
    if not value:
        return value
    return value[0] + "*" * max(1, len(value) - 1)


def phone(value: str | None) -> str | None:
    if not value:
        return value
    if len(value) >= 8:
        return value[:3] + "*" * (len(value) - 7) + value[-4:]
    return "*" * len(value)


def id_number(value: str | None) -> str | None:
    if not value:
        return value
    if len(value) >= 15:
        return value[:6] + "*" * (len(value) - 10) + value[-4:]
    return "*" * (len(value) - 2) + value[-2:] if len(value) > 4 else "*" * len(value)


def certificate(value: str | None) -> str | None:
    if not value:
        return value
    if len(value) > 6:
        return value[:2] + "*" * (len(value) - 4) + value[-2:]
    return "*" * len(value)
