"""The reproduction's pre-registration: each family's number of seeds, fixed by a power
calculation from the teacher and student-alone runs of phase 1, before any distillation run.

``reproduce.py --register`` reads the committed phase 1 records and writes ``protocol.json``:

* the aims (``repro_report.MIN_STUDENT``, ``MIN_GAP``): the student alone reaches 5 mAP and the
  teacher leads it by 5 points; a family that misses either is not registered (its setting
  changes first);
* the effect to detect: a third of the family's teacher-student gap;
* the spread of a paired difference: the students alone's sample standard deviation over the
  setting's seeds times sqrt(2), as if the two runs of a pair were independent. Exact pairs
  (same weights, batches and augmentations) can only share more than that, so this is the
  conservative side; the registered count is not revised downward once pairs are measured;
* the seeds: the fewest (at least 3) whose paired two-sided t-test separates that effect with
  80 % power at alpha 0.05 (:func:`bckd.evaluation.power.seeds_for_power`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

from repro_records import REPRO, Records, commit, git_commit
from repro_report import MIN_GAP, MIN_STUDENT

from bckd.evaluation.power import paired_power, seeds_for_power

__all__ = ["PROTOCOL", "load_protocol", "register"]

PROTOCOL = REPRO / "protocol.json"
POWER, ALPHA, EFFECT_SHARE = 0.8, 0.05, 1 / 3
MOST_SEEDS = 20  # beyond this the setting, not the seed count, has to change


def load_protocol(path: Path, protocol: str) -> dict | None:
    """The registration for the run setting ``protocol``, or None (none yet, or another's)."""
    if not path.is_file():
        return None
    reg = json.loads(path.read_text())
    return reg if reg.get("protocol") == protocol else None


def register(records: Records, s, prefix: str, path: Path, do_commit: bool) -> int:
    """Write ``path`` from the phase 1 records of schedule ``s``; 1 if a family can't be."""
    families, refused = {}, []
    for family in s.families:
        teacher = records.teacher(family)
        students = [records.of(f"{prefix}-{family}_student-s{seed}") for seed in s.setting_seeds]
        if teacher is None or not all(students):
            refused.append(f"{family}: phase 1 is not recorded whole (teacher and the student "
                           f"alone on seeds {list(s.setting_seeds)})")
            continue
        t_map = 100 * teacher["metrics"].get("coco/bbox_mAP", math.nan)
        maps = [100 * found[0]["metrics"].get("coco/bbox_mAP", math.nan) for found in students]
        s_map, sd = statistics.fmean(maps), statistics.stdev(maps)
        gap = t_map - s_map
        if not (s_map >= MIN_STUDENT and gap >= MIN_GAP):
            refused.append(f"{family}: student alone {s_map:.1f} mAP, teacher {t_map:.1f} (gap "
                           f"{gap:.1f}): the aims are {MIN_STUDENT:g} mAP and a {MIN_GAP:g}-point "
                           "lead; change the setting, not the seeds")
            continue
        effect, sd_diff = EFFECT_SHARE * gap, math.sqrt(2) * sd
        n = seeds_for_power(effect, sd_diff, POWER, ALPHA, most=MOST_SEEDS)
        families[family] = dict(
            teacher_mAP=round(t_map, 3), student_mAPs=[round(m, 3) for m in maps],
            student_sd=round(sd, 3), gap=round(gap, 3), effect=round(effect, 3),
            sd_diff_assumed=round(sd_diff, 3), seeds=n,
            power_at_seeds=round(paired_power(n, effect, sd_diff, ALPHA), 3))
        print(f"{family}: gap {gap:.2f}, effect {effect:.2f}, student sd {sd:.2f} -> "
              f"sd(diff) {sd_diff:.2f}: {n} seeds (power "
              f"{families[family]['power_at_seeds']:.2f})", flush=True)
    for line in refused:
        print(line, flush=True)
    if not families:
        return 1
    path.write_text(json.dumps(dict(
        protocol=records.protocol, registered_at=time.strftime("%Y-%m-%d %H:%M UTC",
                                                               time.gmtime()),
        git_commit=git_commit(), power=POWER, alpha=ALPHA, effect="gap / 3",
        sd_diff="sqrt(2) x the students alone's sample sd", families=families,
        not_registered=refused), indent=1) + "\n")
    print(f"wrote {path}", flush=True)
    if do_commit:
        commit([path], "reproduce: register the seeds of phase 2 by the power calculation")
    return 1 if refused else 0
