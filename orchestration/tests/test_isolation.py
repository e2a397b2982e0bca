import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LIGHT_MODULES = [
    "orchestration",
    "orchestration.types",
    "orchestration.planning",
    "orchestration.routing",
    "orchestration.summary",
    "orchestration.budget",
    "orchestration.context",
    "orchestration.metering",
    "orchestration.json_contract",
    "orchestration.litellm_loader",
    "orchestration.gateway",
]


def run_python(code: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return completed.stdout.strip()


def test_light_modules_do_not_import_litellm_or_django():
    imports = "; ".join(f"import {name}" for name in LIGHT_MODULES)
    loaded = run_python(
        f"import sys; {imports}; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'litellm', 'django', 'rest_framework', 'rooms', "
        "'sessions_app', 'usage', 'pantheon'}))"
    )
    assert loaded == "[]"


def test_litellm_is_imported_with_the_local_cost_map():
    code = (
        "import os; os.environ.pop('LITELLM_LOCAL_MODEL_COST_MAP', None); "
        "import sys; import orchestration.demo_provider; "
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'], 'django' in sys.modules)"
    )
    assert run_python(code) == "True False"


def test_litellm_never_fetches_its_cost_map_whatever_the_environment_says():
    """`LITELLM_LOCAL_MODEL_COST_MAP=False` in the environment was kept (setdefault): litellm
    then fetched its price table from the network as it was imported."""
    code = (
        "import os; os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'False'; "
        "from orchestration.litellm_loader import load_litellm; load_litellm(); "
        "from litellm.litellm_core_utils.get_model_cost_map import _cost_map_source_info as s; "
        "print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'], s.source, s.is_env_forced)"
    )
    # litellm's own record of where its map came from: the copy it ships, as told.
    assert run_python(code) == "True local True"
