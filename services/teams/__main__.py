import sys

if sys.argv[1:2] == ["import-units"]:
    from teams.cli import main

    sys.exit(main(sys.argv[2:]))
if sys.argv[1:2] == ["create-admin"]:
    from teams.cli_accounts import main as create_admin

    sys.exit(create_admin(sys.argv[2:]))

from common.main import run_service
from teams.bootstrap import build_app, build_runtime
from teams.settings import TeamsSettings

run_service(settings=TeamsSettings(), build_runtime=build_runtime, build_app=build_app)
