from activities.bootstrap import build_app, build_runtime
from activities.settings import ActivitiesSettings
from common.main import run_service

run_service(settings=ActivitiesSettings(), build_runtime=build_runtime, build_app=build_app)
