from activities.adapters import metadata
from common.migrations import run_env

run_env(metadata)
