from common.migrations import run_env
from scoring.adapters import metadata

run_env(metadata)
