"""Whether the Spark engine can start on this machine: the marks every Spark engine test module carries."""

from __future__ import annotations

import pytest

from sonik_pipeline.engines.spark_session import SparkNotReady, offline_jars

try:
    import pyspark
except ImportError:  # the local engine never needs it; the dev install (and so CI) has it
    pyspark = None
try:
    offline_jars("sqlite:///x") and offline_jars("postgresql://x/y")
    missing = None
except SparkNotReady as exc:
    missing = str(exc)

# Slow (a JVM starts), and skipped with the reason where Spark or its jars are not installed.
SPARK_TESTS = [
    pytest.mark.slow,
    pytest.mark.skipif(pyspark is None, reason="pyspark is not installed: pip install '.[spark]'"),
    pytest.mark.skipif(missing is not None, reason=f"the Spark engine cannot start here: {missing}"),
]
