"""Fakes of the systems kfloop talks to, shared by tests in several folders: model bundles, a KFP
API server, a CloudEvents sink, an in-memory rollout target with simulated traffic."""
