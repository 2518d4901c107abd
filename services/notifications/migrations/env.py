from common.migrations import run_env
from notifications.adapters import metadata

run_env(metadata)
