"""`mlops status`: the stack's parts and each environment it delivers to, as lines or as JSON."""

from __future__ import annotations

import json
from typing import Any

from mlops.config import stack_settings
from mlops.config.stack import StackSettings
from mlops.platform import services
from mlops.platform.parts import parts


def status(settings: StackSettings | None = None, as_json: bool = False) -> int:
    """One line per part, then per environment of each use case (or all of it as JSON); 0 when all
    parts and every applied environment are healthy."""
    s = settings or stack_settings()
    report = status_report(s)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for name, part in report["parts"].items():
            print(
                f"{name:<17} pid {part['pid'] or '-'!s:<8} alive {'yes' if part['alive'] else 'no ':<4} "
                f"health {'ok  ' if part['healthy'] else 'FAIL'} {part['url']}"
            )
        for use_case, found in report["use_cases"].items():
            for name, env in found["environments"].items():
                print(services.environment_line(f"{use_case} {name}", env))
    return 0 if report["healthy"] else 1


def status_report(s: StackSettings) -> dict[str, Any]:
    """The stack's parts (pid, alive, healthy, URL) and, per use case it delivers, each environment's
    version, URL and health; `healthy` when every part and every applied environment is."""
    found: dict[str, Any] = {}
    for part in parts(s).values():
        record = part.running()
        found[part.name] = {
            "pid": record.pid if record else None,
            "alive": record is not None,
            "healthy": part.healthy() if record else False,
            "url": part.health_url,
        }
    use_cases = services.environments_report(s)
    healthy = all(p["healthy"] for p in found.values()) and all(
        e["healthy"] is not False for u in use_cases.values() for e in u["environments"].values()
    )
    return {"healthy": healthy, "parts": found, "use_cases": use_cases}
