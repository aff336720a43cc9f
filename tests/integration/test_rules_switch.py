"""HERALD_LIMITS_ENABLED: off, ingest's rules count nothing and refuse no send for its rate or daily
volume, and never reach Redis; trial mode and team keys still hold."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from herald.domain import limits
from herald.service_layer.admin import Admin
from herald.service_layer.errors import InvalidRequest
from herald.service_layer.rules import ServiceRules
from herald.settings import Settings
from tests.integration.test_service_rules import SMS, Setup
from tests.support import free_port

UK_MOBILE = "447700900123"


def _redis_unavailable() -> float:
    return REGISTRY.get_sample_value("herald_rate_limit_redis_unavailable_total") or 0.0


def test_the_limits_are_on_by_default(admin: Admin, clean_db: Engine, settings: Settings) -> None:
    assert Settings().limits_enabled
    setup = Setup(admin, clean_db, settings, None)
    admin.update_service(setup.service_id, limit_values={"sms_message_limit": 0})
    rules = ServiceRules.from_settings(replace(settings, redis_url=""), clean_db)
    with pytest.raises(limits.DailyLimitExceeded):
        rules.check(setup.caller("normal"), SMS, UK_MOBILE)


def test_off_no_limit_refuses_and_redis_is_never_asked(admin: Admin, clean_db: Engine, settings: Settings) -> None:
    setup = Setup(admin, clean_db, settings, None)
    admin.update_service(setup.service_id, limit_values={"rate_limit": 3, "sms_message_limit": 0})  # a bucket of 2
    # A Redis that is not there: had the rules asked it, each send would be counted as unlimited.
    off = replace(settings, limits_enabled=False, redis_url=f"redis://127.0.0.1:{free_port()}")
    rules = ServiceRules.from_settings(off, clean_db)
    before = _redis_unavailable()
    caller = setup.caller("normal")
    for _ in range(5):
        rules.check(caller, SMS, UK_MOBILE)
    assert _redis_unavailable() == before


def test_off_trial_mode_and_team_keys_still_hold(admin: Admin, clean_db: Engine, settings: Settings) -> None:
    setup = Setup(admin, clean_db, settings, None, restricted=True)
    admin.add_team_member(setup.service_id, mobile_number="07700 900111")
    admin.update_service(setup.service_id, limit_values={"sms_message_limit": 0})
    setup.send("normal", SMS, "07700900111")  # a team member, past the daily limit of 0
    for key_type, message in (("normal", limits.TRIAL_MODE_MESSAGE), ("team", limits.TEAM_KEY_MESSAGE)):
        with pytest.raises(InvalidRequest) as refused:
            setup.send(key_type, SMS, "07700900999")
        assert refused.value.violations == [("phone_number", message)]
    assert len(setup.published) == 1
