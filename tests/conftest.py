import os
import tempfile

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# The default data folder (data/) may hold a developer's demo: its labels and entities must not
# leak into tests that leave ANOMALY_LABELS / ANOMALY_ENTITIES unset.
os.environ.setdefault("ANOMALY_DATA_DIR", tempfile.mkdtemp(prefix="anomaly-test-data-"))
