"""Scoring service: `python -m scoring [api|worker|migrate|recompute]`."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "recompute":
    from scoring.recompute import main

    main()
else:
    from common.main import run_service
    from scoring.bootstrap import build_app, build_runtime
    from scoring.settings import ScoringSettings

    run_service(settings=ScoringSettings(), build_runtime=build_runtime, build_app=build_app)
