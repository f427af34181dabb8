import atexit
import os
import shutil
import tempfile

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# The default data folder (data/) may hold a developer's demo: its labels and entities must not
# leak into tests that leave ANOMALY_LABELS / ANOMALY_ENTITIES unset.
if "ANOMALY_DATA_DIR" not in os.environ:
    os.environ["ANOMALY_DATA_DIR"] = tempfile.mkdtemp(prefix="anomaly-test-data-")
    atexit.register(shutil.rmtree, os.environ["ANOMALY_DATA_DIR"], ignore_errors=True)
