#!/bin/bash
# PPO from a pipeline run's RLHF-V3 with less and less reward (docs/results.md, "PPO without its
# reward models' head, and PPO without any reward"). Every run is the demo preset for 16
# iterations with the keep rules off, judged at iteration 16 against V3, prompt by prompt.
#   zero_head:  V3's helpfulness RM with its head zeroed (Rh reads the trunk's likelihood alone)
#   no_reward:  both RMs' heads and likelihood weights zeroed (every Rc 0.5, whitened to 0)
#   rms_no_penalty, no_reward_no_penalty: V3's RMs, and no reward, with --truncation-penalty 0
#
#   bash experiments/ppo_null_reward.sh RUN_DIR OUT_DIR
set -euo pipefail
run=$1 out=$2
v3=$run/rlhf_v3/rejection_sampling/sft/model
mkdir -p "$out"

zeroed() {  # zeroed SOURCE_RM DEST KEYS...: a copy of a reward model with these head tensors zeroed
  rm -rf "$2" && cp -r "$1" "$2"
  python - "$2/reward_head.safetensors" "${@:3}" <<'PY'
import sys
from safetensors.torch import load_file, save_file
path, keys = sys.argv[1], sys.argv[2:]
head = load_file(path)
for key in keys:
    if key in head:  # the safety RM has no likelihood term
        head[key].zero_()
save_file(head, path)
PY
}
zeroed "$run/rlhf_v3/rm_helpfulness/model" "$out/rm_zero_head" weight
zeroed "$run/rlhf_v3/rm_helpfulness/model" "$out/rm_null_helpfulness" weight likelihood_weight
zeroed "$run/rlhf_v3/rm_safety/model" "$out/rm_null_safety" weight likelihood_weight

ppo() {  # ppo NAME RM_HELPFULNESS RM_SAFETY [FLAGS]
  llamaforge ppo --policy "$v3" --rm-helpfulness "$2" --rm-safety "$3" --prompts "$run/rlhf_ppo/prompts.jsonl" \
    --out "$out/ppo_$1" --preset demo --max-steps 16 --min-gain 0 --patience 0 --kl-budget 0 "${@:4}" > "$out/ppo_$1.log" 2>&1
}
ppo zero_head "$out/rm_zero_head" "$run/rlhf_v3/rm_safety/model"
ppo no_reward "$out/rm_null_helpfulness" "$out/rm_null_safety"
ppo rms_no_penalty "$run/rlhf_v3/rm_helpfulness/model" "$run/rlhf_v3/rm_safety/model" --truncation-penalty 0
ppo no_reward_no_penalty "$out/rm_null_helpfulness" "$out/rm_null_safety" --truncation-penalty 0

python "$(dirname "$0")/paired_gold.py" "$run/world" 2 "$v3" \
  "$out"/ppo_{zero_head,no_reward,rms_no_penalty,no_reward_no_penalty}/checkpoints/step-00000016
