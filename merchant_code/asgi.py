"""The factory granian's workers call: settings from the environment the CLI prepared."""

from __future__ import annotations

import os

from litestar import Litestar

from merchant_code import shared_buckets
from merchant_code.app import create_app
from merchant_code.settings import Settings


def app_from_env() -> Litestar:
    # the per-client buckets the serve command made for every worker to share
    return create_app(Settings.from_env(os.environ), shared_limits=shared_buckets.attach_from_env(os.environ))
