"""Every attack of `bulwark attack`, in the order it runs them. A new attack is one object
added here."""

from __future__ import annotations

from generator.harness.abuse.floods import BAD_TEXT, INVALID_JSON, OVERSIZED, READY_FLOOD
from generator.harness.abuse.scenario import Attack
from generator.harness.abuse.slow import SLOWLORIS
from generator.harness.abuse.spoofing import IPV6_ROTATION, SPOOF_K8S, SPOOF_NGINX

SCENARIOS: dict[str, Attack] = {
    attack.name: attack
    for attack in (
        SPOOF_K8S,
        SPOOF_NGINX,
        IPV6_ROTATION,
        SLOWLORIS,
        OVERSIZED,
        INVALID_JSON,
        BAD_TEXT,
        READY_FLOOD,
    )
}
