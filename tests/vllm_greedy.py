"""Greedy tokens from vLLM's engine for a model folder (run as a script: vLLM starts worker
processes, which re-import the main module; tests/test_vllm.py calls it in a subprocess).

python tests/vllm_greedy.py MODEL_DIR REQUESTS.json OUT.json: REQUESTS.json holds
{"prompt": text, "audios": [path of a float32 .npy at 16 kHz, ...], "max_tokens": n};
OUT.json gets {"tokens": [[ids of each audio's answer], ...]}.
"""

import json
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the tiny models need a few MB
    import numpy as np
    from vllm import LLM, SamplingParams

    model, requests, out = sys.argv[1:4]
    spec = json.loads(open(requests).read())
    llm = LLM(model=model, dtype="float32", max_model_len=2048, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"audio": 1})
    prompts = [{"prompt": spec["prompt"], "multi_modal_data": {"audio": (np.load(path), 16000)}}
               for path in spec["audios"]]
    results = llm.generate(prompts, SamplingParams(max_tokens=spec["max_tokens"], temperature=0.0))
    with open(out, "w") as f:
        json.dump({"tokens": [list(r.outputs[0].token_ids) for r in results]}, f)
