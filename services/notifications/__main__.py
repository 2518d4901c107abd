from common.main import run_service
from notifications.bootstrap import build_app, build_runtime
from notifications.settings import NotificationsSettings

run_service(settings=NotificationsSettings(), build_runtime=build_runtime, build_app=build_app)
