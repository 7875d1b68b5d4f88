"""``kdstream teacher`` with a slow training step, for the slow-teacher scenario.

    python tests/faults/slow_teacher.py <fit delay s> teacher --broker ... (cli_runtime args)

Test-side injection only: ``SASRecTeacher.fit`` sleeps ``<fit delay s>`` before training, then
the teacher process runs unchanged (``kdstream.cli_runtime.main``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    delay = float(argv[0])
    from kdstream.cli_runtime import main as cli_main
    from kdstream.teacher import _trainer

    original = _trainer.SASRecTeacher.fit
    log = logging.getLogger("slow_teacher")

    def slow_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        log.info("slow_teacher: fit delayed by %.1fs", delay)
        time.sleep(delay)
        return original(self, *args, **kwargs)

    _trainer.SASRecTeacher.fit = slow_fit  # type: ignore[method-assign]
    return cli_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
