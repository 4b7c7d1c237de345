"""The keys of a study's own user attributes (a trial's are ``autotune.trial.record``'s): what
``tune`` records about the study, read back by ``profiles save --from-study``, the report and
the other workers."""

from __future__ import annotations

MODEL = "model"  # ModelSpec.to_dict() and its name
HARDWARE = "hardware"  # Hardware.to_dict(): the key the study is for
WORKLOAD = "workload"  # Workload.to_dict() and its signature
SPACE = "space"  # SearchSpace.describe()
INPUTS = "profile_inputs"  # what a later --from-study needs (extra args, goal, objective)
CHOSEN = "chosen_trial"  # the trial the profile was saved from
SOAK = "soak"  # configuration key -> SoakVerdict.to_dict()
STOPPED_EARLY = "stopped_early"  # why the study stopped before its budget (--patience)
FINGERPRINT = "fingerprint"  # the hardware every worker must match
CREATED_BY = "created_by"  # the worker that created the study
