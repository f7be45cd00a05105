"""Registered bundles on the model servers' disk: what a registry reference (``NAME:VERSION``,
``NAME@STAGE``) names, downloaded for serving. Nothing here imports KServe (the monitor process uses it)."""

from __future__ import annotations

import logging
from pathlib import Path

from kfloop.config import Settings
from kfloop.store.objects import open_store
from kfloop.store.registry import ModelRef, Registry

logger = logging.getLogger(__name__)


def fetch_registered(ref: str, settings: Settings) -> tuple[Path, str]:
    """Download a registered version's bundle below ``<home>/serving/bundles/<name>/<version>``."""
    registry = Registry(open_store(settings))
    record = registry.resolve(ModelRef.parse(ref))
    dest = Path(settings.home) / "serving" / "bundles" / record.name / str(record.version)
    _, path = registry.fetch_bundle(record.ref, dest)
    logger.info("fetched %s (%s, stage %s) into %s", ref, record.ref, record.stage, path)
    return path, str(record.version)
