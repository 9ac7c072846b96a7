"""User code does not see the control plane's secrets: the API token, the encryption key and
the store URL are not in a python or shell step's environment (nor in settings a python step
reads), while the rest of the environment and a step's own `env` are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: envcheck, path: tests/envcheck}
workflow:
  - step: start
    tool:
      kind: python
      code: |
        import os
        from noetl.settings import settings
        names = ("NOETL_API_TOKEN", "NOETL_ENCRYPTION_KEY", "NOETL_STORE_URL", "ENVCHECK_PLAIN")
        result = {"env": {n: os.environ.get(n) for n in names}, "token": settings().api_token}
    next: [{step: shell}]
  - step: shell
    tool:
      kind: shell
      env: {STEP_OWN: mine}
      command: 'echo "${NOETL_API_TOKEN:-none} ${NOETL_ENCRYPTION_KEY:-none} ${NOETL_STORE_URL:-none} $ENVCHECK_PLAIN $STEP_OWN"'
"""


def test_steps_do_not_see_the_control_planes_secrets(tmp_path: Path) -> None:
    playbook = tmp_path / "envcheck.yaml"
    playbook.write_text(PLAYBOOK)
    store = f"sqlite:///{tmp_path / 's.db'}"
    env = {
        **os.environ,
        "NOETL_API_TOKEN": "tok-secret-0123456789abcdef",
        "NOETL_ENCRYPTION_KEY": "a" * 64,
        "NOETL_STORE_URL": store,
        "ENVCHECK_PLAIN": "plain",
    }
    done = subprocess.run(
        [sys.executable, "-m", "noetl", "run", str(playbook), "--json", "-q"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout)["steps"]
    python = steps["start"]["result"]
    assert python["env"] == {
        "NOETL_API_TOKEN": None,
        "NOETL_ENCRYPTION_KEY": None,
        "NOETL_STORE_URL": None,
        "ENVCHECK_PLAIN": "plain",
    }
    assert python["token"] is None
    assert steps["shell"]["result"]["stdout"].strip() == "none none none plain mine"
