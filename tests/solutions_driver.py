"""Run every solution under ``smoke`` in one process (imports paid once), for the tests.

    python tests/solutions_driver.py OUT_DIR SCRIPT [SCRIPT ...]

Run from inside a project copy (``NBUTILS_ROOT``). Trains the smoke models of 02-04
first (what solutions 05-07 read), then runs each script as ``__main__`` with
``--profile smoke``; writes ``OUT_DIR/<script stem>.log`` (its output) and
``OUT_DIR/status.json`` (``"ok"`` or the error, per script).
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
import traceback
from pathlib import Path


def main(out_dir: Path, scripts: list[Path]) -> None:
    import nbutils
    from nbutils.train import get_recipe

    for model in ("alexnet", "keras_cnn", "hf_transfer"):
        get_recipe(model).train(nbutils.setup("smoke", model=model, verbose=False))
    status = {}
    for script in scripts:
        buffer = io.StringIO()
        sys.argv = [str(script), "--profile", "smoke"]
        try:
            with contextlib.redirect_stdout(buffer):
                runpy.run_path(str(script), run_name="__main__")
            status[script.stem] = "ok"
        except BaseException:  # noqa: BLE001 - report every failure, SystemExit included
            status[script.stem] = traceback.format_exc()[-3000:]
        (out_dir / f"{script.stem}.log").write_text(buffer.getvalue())
    (out_dir / "status.json").write_text(json.dumps(status, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
