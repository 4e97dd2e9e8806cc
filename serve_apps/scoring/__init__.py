"""Online scoring: ``POST /v1/{contract}/predict`` on Ray Serve, with an API key.

    serve run configs/serve.yaml              # or: sluice serve
    import_path: serve_apps.scoring.app:build_app

The path of one request: ``auth`` (API key) -> ``schemas`` (body limit, request model
generated from the contract) -> ``deployments.HandleModelClient`` (alone while call slots
are free; beyond, grouped into one call) -> ``deployments.ScoringModel`` (``@serve.batch``: the
contract's ``Scorer``: validate, features from Cassandra, predict; canary split) ->
``prediction_log`` (written to Cassandra off the request path).
"""

from serve_apps.scoring.app import ScoringAppArgs, build_app

__all__ = ["ScoringAppArgs", "build_app"]
