"""Run the SpineBiomech modules' self-tests inside 3D Slicer.

Usage (with the extension built, or its module folders added as additional module paths):

    Slicer --no-main-window --python-script Testing/Slicer/run_selftests.py

Each module's ``<Module>Test`` (a ScriptedLoadableModuleTest) runs against the application's scene; the
script exits with status 0 when every test passed and 1 otherwise, so CI can call it directly.
"""

import sys
import traceback
import unittest

import slicer

MODULES = ["SpineSegment", "SpineRegister", "SpineBiomech"]


def run() -> int:
    failures = 0
    for name in MODULES:
        try:
            module = __import__(name)
            test = getattr(module, f"{name}Test")()
            test.runTest()
            print(f"{name}: passed")
        except unittest.SkipTest as exc:
            print(f"{name}: skipped ({exc})")
        except Exception:
            failures += 1
            print(f"{name}: FAILED")
            traceback.print_exc()
    return 1 if failures else 0


if __name__ == "__main__":
    code = run()
    slicer.util.exit(code) if hasattr(slicer.util, "exit") else sys.exit(code)
