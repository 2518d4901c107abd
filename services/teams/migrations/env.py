from common.migrations import run_env
from teams.adapters import metadata

run_env(metadata)
