"""deploy: serve the registered version on KServe (``kubernetes``) or the local gateway (``local``).

The new version takes ``canary_percent`` of the traffic next to the serving one (100: all of it);
the first deploy of a model, with nothing serving yet, takes all traffic. Registry stages follow
(``kfloop.rollout.actions``). Returns the target's status document as JSON; a version the register
step left pending-approval (its bias check failed with ``bias_action`` "approval") is not deployed.
"""


def deploy(model_ref: str, deploy_target: str, canary_percent: int, namespace: str, gateway_url: str) -> str:
    import json

    from kfloop.config import Settings
    from kfloop.rollout import actions as rollout
    from kfloop.rollout.factory import OptionNames, RolloutOptions, make_target
    from kfloop.store.objects import open_store
    from kfloop.store.registry import ModelRef, Registry

    settings = Settings.from_env()
    registry = Registry(open_store(settings))
    record = registry.resolve(ModelRef.parse(model_ref))
    if record.stage == "pending-approval":
        return json.dumps({"deployed": False, "reason": f"{record.ref} is pending approval"}, sort_keys=True)
    options = RolloutOptions(
        target=deploy_target,
        gateway_url=gateway_url,
        namespace=namespace or None,
        image=settings.image,
        names=OptionNames("deploy_target", unknown_target="{name} {kind!r}: expected 'kubernetes' or 'local'"),
    )
    status = rollout.deploy(registry, make_target(options), model_ref, canary_percent)
    return json.dumps(status, sort_keys=True)
