"""Run by the Python of a clean venv that has only the built wheel installed (tests/test_wheel.py): start a
kernel of that venv, run %compress and %compress --tune through it, print what came back as JSON."""

import json
import sys

from jupyter_client.manager import start_new_kernel

CELLS = [
    "%load_ext jupyter_compress",
    "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))\nx = torch.randn(8, 16)",
    "%compress model --prune 0.5 --svd 0.5 --example x --as small",
    "%compress model --tune --example x",
    "print(type(small).__name__, sum(p.numel() for p in small.parameters()))",
]

km, kc = start_new_kernel(kernel_name="python3")
results = []
try:
    for code in CELLS:
        msg_id = kc.execute(code)
        outputs = []
        while True:
            msg = kc.get_iopub_msg(timeout=300)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                break
            if kind in ("display_data", "execute_result"):
                outputs.append({"type": kind, "mimes": sorted(content["data"])})
            elif kind == "stream":
                outputs.append({"type": content["name"], "text": content["text"][-2000:]})
            elif kind == "error":
                outputs.append({"type": "error", "ename": content["ename"], "evalue": content["evalue"][:500]})
        results.append({"code": code, "outputs": outputs})
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
json.dump(results, sys.stdout)
