"""Ray Serve applications of Sluice (FastAPI ingress + model deployments).

Each application is a subpackage whose ``app.py`` exposes ``build_app(args)``; the
deployable config lives in ``configs/serve.yaml`` (``serve deploy configs/serve.yaml``).
"""
