"""The drift transformer's flags: their defaults are ``TransformerOptions``' (written once), and a flag
given on the command line reaches the options."""

from __future__ import annotations

import dataclasses

from kfloop.config import Settings
from kfloop.serving.model_servers.transformer import TransformerOptions, build_parser, options_from

REQUIRED = ["--model_name", "churn", "--predictor_host", "127.0.0.1:8081"]


def test_flag_defaults_are_the_options_defaults():
    args = build_parser().parse_args(REQUIRED)
    assert options_from(args, Settings.from_env({})) == TransformerOptions()


def test_every_option_but_the_platform_s_has_a_flag_that_sets_it():
    given = {
        "revision": ("--revision", "canary", "canary"),
        "event_source": ("--event_source", "kfloop/x", "kfloop/x"),
        "drift_window": ("--drift_window", "64", 64),
        "drift_backend": ("--drift_backend", "alibi", "alibi"),
        "drift_queue_rows": ("--drift_queue_rows", "77", 77),
        "drift_cpu_share": ("--drift_cpu_share", "0.5", 0.5),
        "drift_versions": ("--drift_versions", "3", 3),
        "encoded_rows": ("--predictor_rows", "encoded", True),
        "max_batch_size": ("--max_batch_size", "12", 12),
        "coalesce_calls": ("--predictor_coalesce_calls", "0", 0),
        "max_body_bytes": ("--max_body_bytes", "4096", 4096),
        "capture_format": ("--capture_format", "jsonl", "jsonl"),
        "capture_batch_size": ("--capture_batch_size", "9", 9),
        "capture_flush_seconds": ("--capture_flush_seconds", "0.5", 0.5),
        "capture_max_buffer": ("--capture_max_buffer", "99", 99),
        "capture_journal": ("--capture_journal", "/tmp/journal", "/tmp/journal"),
        "monitor_process": ("--monitor_process", "false", False),
        "shutdown_seconds": ("--shutdown_seconds", "3", 3.0),
    }
    platform = {"ce_extensions"}  # from K_CE_OVERRIDES
    assert set(given) | platform == {f.name for f in dataclasses.fields(TransformerOptions)}
    argv = REQUIRED + [part for flag, value, _ in given.values() for part in (flag, value)]
    options = options_from(build_parser().parse_args(argv), Settings.from_env({}))
    assert {name: getattr(options, name) for name in given} == {name: want for name, (_, _, want) in given.items()}
    for name, (_, _, want) in given.items():
        assert getattr(TransformerOptions(), name) != want, f"{name}: the test's value is the default"
