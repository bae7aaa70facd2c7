"""Sensors: late landing files are ingested, the marts follow plays, freshness is judged on the clock, and
dead runs let go of their slots."""

import dagster as dg

from sonik_pipeline.landing_sensor import build_landing_sensor
from sonik_pipeline.run_health import dead_run_sensor

RUNNING = dg.DefaultSensorStatus.RUNNING


def build_sensors(freshness_checks, plays_job, partitions, watch_landing: bool) -> list[dg.SensorDefinition]:
    # Declarative automation (marts following plays) is evaluated by this sensor.
    automation = dg.AutomationConditionSensorDefinition(
        "marts_follow_plays", target=dg.AssetSelection.all(), default_status=RUNNING
    )
    freshness = dg.build_sensor_for_freshness_checks(
        freshness_checks=freshness_checks, name="plays_freshness_sensor", default_status=RUNNING
    )
    landing = build_landing_sensor(plays_job, partitions, running=watch_landing)
    return [landing, automation, freshness, dead_run_sensor]
