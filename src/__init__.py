"""Knowledge distillation of the SBI deepfake detector. Its layers, each importing only those below it (checked by
tests/test_layers.py): the commands (src/<command>.py); train, scoring, deploy; data, faces, models; common."""
import sys

PYTHON = (3, 10)  # the oldest Python the README names; tests/test_docs.py parses every module as this version
if sys.version_info < PYTHON:
    raise SystemExit(f"this project needs Python {'.'.join(map(str, PYTHON))} or newer, not {sys.version.split()[0]}: "
                     f"make the virtual environment with a newer python3")
