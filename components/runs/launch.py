"""Entry point that `torchrun` starts once per process: `python -m components.runs.launch --config-json C`.

Every rank trains its shard; rank 0 logs to MLflow and writes the run's result JSON for the launching process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.config import ExperimentConfig
from components.runs.training_run import result_to_json, train_on_this_rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config-json", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    payload = json.loads(args.config_json.read_text())
    cfg = ExperimentConfig.model_validate(payload["config"])
    result = train_on_this_rank(cfg, args.resume, payload["tags"] or None)
    if result is not None:
        args.result.write_text(result_to_json(result))


if __name__ == "__main__":
    main()
