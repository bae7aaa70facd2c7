"""Sensors: the marts follow plays, freshness is judged on the clock, and dead runs let go of their slots."""

import dagster as dg

from sonik_pipeline.run_health import dead_run_sensor

RUNNING = dg.DefaultSensorStatus.RUNNING


def build_sensors(freshness_checks) -> list[dg.SensorDefinition]:
    # Declarative automation (marts following plays) is evaluated by this sensor.
    automation = dg.AutomationConditionSensorDefinition(
        "marts_follow_plays", target=dg.AssetSelection.all(), default_status=RUNNING
    )
    freshness = dg.build_sensor_for_freshness_checks(
        freshness_checks=freshness_checks, name="plays_freshness_sensor", default_status=RUNNING
    )
    return [automation, freshness, dead_run_sensor]
