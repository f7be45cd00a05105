"""deploy: serve the registered version on KServe (``kubernetes``) or the local gateway (``local``).

The new version takes ``canary_percent`` of the traffic next to the serving one (100: all of it);
the first deploy of a model, with nothing serving yet, takes all traffic. Registry stages follow
(``kfloop.rollout.actions``). Returns the target's status document as JSON.
"""


def deploy(model_ref: str, deploy_target: str, canary_percent: int, namespace: str, gateway_url: str) -> str:
    import json

    from kfloop.config import Settings
    from kfloop.errors import ConfigError
    from kfloop.rollout import actions as rollout
    from kfloop.store.objects import open_store
    from kfloop.store.registry import Registry

    settings = Settings.from_env()
    if deploy_target == "kubernetes":
        from kfloop.rollout.targets.kubernetes import KubernetesTarget  # only the chosen target's client is imported

        target = KubernetesTarget(namespace or None, image=settings.image)
    elif deploy_target == "local":
        from kfloop.rollout.targets.local import LocalTarget

        target = LocalTarget(gateway_url)
    else:
        raise ConfigError(f"deploy_target {deploy_target!r}: expected 'kubernetes' or 'local'")
    status = rollout.deploy(Registry(open_store(settings)), target, model_ref, canary_percent)
    return json.dumps(status, sort_keys=True)
