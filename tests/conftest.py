"""Test-wide settings: no network, no telemetry, a fixed thread count."""

import os

# No test touches the network or reports telemetry (CI sets these too).
for name, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "ORT_DISABLE_TELEMETRY": "1",
}.items():
    os.environ.setdefault(name, value)
