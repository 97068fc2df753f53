"""The factory granian's workers call: settings from the environment the CLI prepared."""

from __future__ import annotations

import os

from litestar import Litestar

from merchant_code.app import create_app
from merchant_code.settings import Settings


def app_from_env() -> Litestar:
    return create_app(Settings.from_env(os.environ))
