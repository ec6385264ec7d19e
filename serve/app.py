"""``build_app(args)``: the NBMF codec service as a Ray Serve application.

    serve run serve.app:build_app model_dir=models              # development (blocks; Ctrl-C stops)
    serve deploy serve/config.yaml                              # production (autoscaling_config there)

Two deployments: ``Ingress`` (FastAPI: HTTP API, canary routing, stub fallback, stub/legacy decode)
and ``CodecModel`` (neural versions, multiplexed by encoder version, autoscaled). Rollout steps
change only the ingress ``user_config`` (``current``, ``candidate``, ``canary_share``, and per domain
``domains: {legal: {current, candidate, canary_share}}``): Serve calls ``reconfigure()`` on the running
replicas, no restart. A domain the model dir's DOMAINS.json names encodes with its version without any of it.

(No ``from __future__ import annotations``: Serve validates builder args against the real
``AppArgs`` annotation; a string annotation would hand ``build_app`` a plain dict.)
"""
import math

from ray.serve import Application

from serve.args import AppArgs
from serve.codec_ops import current_version, domain_versions, list_versions, resolve_model_dir
from serve.ingress import Ingress
from serve.model import CodecModel


def build_app(args: AppArgs) -> Application:
    if not isinstance(args, AppArgs):  # called directly with a dict
        args = AppArgs.model_validate(args)
    model_dir = resolve_model_dir(args.model_dir).resolve()
    held = list_versions(model_dir)
    current = args.current or current_version(model_dir)
    routed = [*domain_versions(model_dir).values()]
    for route in args.domains.values():
        routed += [route.current, route.candidate]
    missing = [v for v in (current, args.candidate, *routed, *args.preload) if v not in (None, "stub") and v not in held]
    if missing:
        raise ValueError(f"{', '.join(missing)} not found in {model_dir} (it holds {', '.join(held) or 'no neural version'}); "
                         f"export the artifact there or fix current/candidate/domains/preload")
    preload = list(dict.fromkeys(v for v in (current, args.candidate, *routed, *args.preload) if v not in (None, "stub")))

    scaling = ({"num_replicas": args.replicas} if args.replicas is not None
               else {"autoscaling_config": args.autoscaling.model_dump()})
    model = CodecModel.options(
        ray_actor_options={"num_cpus": args.model_num_cpus, "num_gpus": args.model_num_gpus,
                           "resources": {} if args.model_num_gpus > 0 else dict(args.replica_resources)},
        max_ongoing_requests=args.max_ongoing_requests,
        user_config={"preload": preload},
        **scaling,
    ).bind(str(model_dir), args.loader, args.max_models_per_replica, args.max_batch_size,
           args.batch_wait_timeout_s, args.limits.max_output_bytes,
           args.model_threads or max(1, math.ceil(args.model_num_cpus)), args.timeouts.codec_s,
           "cuda" if args.model_num_gpus > 0 else None)
    return Ingress.options(
        num_replicas=args.ingress_replicas,
        ray_actor_options={"num_cpus": args.ingress_num_cpus, "resources": dict(args.replica_resources)},
        user_config={"current": current, "candidate": args.candidate, "canary_share": args.canary_share,
                     "domains": {d: route.model_dump() for d, route in args.domains.items()}},
    ).bind(model, str(model_dir), args.limits.model_dump(), args.timeouts.model_dump())
