"""Fakes of the systems kfloop talks to and helpers that tests in more than one folder share: model
bundles and small data sets, a KFP API server, a Kubernetes API server, a CloudEvents sink, an in-memory
rollout target with simulated traffic, the manifests rendered and schema-checked. Test modules import
from here (or their conftest), never from another test module."""
