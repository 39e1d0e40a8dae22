"""The magics through a real Jupyter kernel (jupyter_client), as a notebook runs them."""

from __future__ import annotations

import sys

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.kernel

REPORT_MIME = "application/vnd.jupyter-compress.report+json"


@pytest.fixture(scope="module")
def kernel():
    km, kc = start_new_kernel(kernel_name="python3", extra_arguments=[], startup_timeout=120)
    assert km.kernel_spec.argv[0] in (sys.executable, "python", "python3") or "python" in km.kernel_spec.argv[0]
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def execute(kc, code: str, timeout: float = 120):
    """Run code; return (execute_reply content, list of iopub messages)."""
    msg_id = kc.execute(code)
    outputs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        outputs.append(msg)
    reply = kc.get_shell_msg(timeout=timeout)
    return reply["content"], outputs


def test_magic_in_a_kernel_displays_report_and_emits_a_cell(kernel):
    reply, _ = execute(kernel, (
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))\n"
        "%load_ext jupyter_compress"
    ))
    assert reply["status"] == "ok", reply
    reply, outputs = execute(kernel, "%compress model --prune 0.5 --svd 0.5 --as small --emit-config")
    assert reply["status"] == "ok", reply
    bundles = [m["content"]["data"] for m in outputs if m["msg_type"] == "display_data"]
    report = next(b for b in bundles if REPORT_MIME in b)
    assert {"text/plain", "text/html"} <= set(report)
    assert report[REPORT_MIME]["model_params_after"] < report[REPORT_MIME]["model_params_before"]
    cells = [p["text"] for p in reply.get("payload", []) if p.get("source") == "set_next_input"]
    assert len(cells) == 1 and cells[0].startswith("%%compress model --as small")

    reply, _ = execute(kernel, "from jupyter_compress import state_dict_hash\nh1 = state_dict_hash(small)\n"
                               "del small")
    reply, _ = execute(kernel, cells[0])
    assert reply["status"] == "ok", reply
    reply, outputs = execute(kernel, "print(state_dict_hash(small) == h1)")
    streams = "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")
    assert streams.strip().endswith("True")


def test_usage_error_in_a_kernel_is_one_line_without_traceback(kernel):
    execute(kernel, "import torch\nfrom torch import nn\nmodel = nn.Linear(4, 4)\n%load_ext jupyter_compress")
    reply, outputs = execute(kernel, "%compress model --prune 1.5")
    assert reply["status"] == "error"
    assert reply["ename"] == "UsageError"
    assert "The 'amount' parameter of PruneConfig must be a float in [0, 1). Got 1.5 instead." in reply["evalue"]
    # IPython shows a UsageError as one line on stderr, with no traceback
    shown = [m["content"] for m in outputs if m["msg_type"] in ("stream", "error")]
    text = "".join(c.get("text", "") + "".join(c.get("traceback", [])) for c in shown)
    assert text.strip().startswith("UsageError: %compress: --prune 1.5: The 'amount' parameter")
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1


def test_openvino_route_shows_the_report_not_the_quantizers_progress_bars(kernel):
    pytest.importorskip("nncf")
    pytest.importorskip("transformers")
    reply, _ = execute(kernel, (
        "import torch, transformers\ntorch.manual_seed(0)\n"
        "cfg = transformers.BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,"
        " intermediate_size=64, num_labels=2)\n"
        "clf = transformers.BertForSequenceClassification(cfg).eval()\n"
        "enc = {'input_ids': torch.randint(1, 300, (4, 9)), 'attention_mask': torch.ones(4, 9, dtype=torch.long)}\n"
        "%load_ext jupyter_compress"))
    assert reply["status"] == "ok", reply
    reply, outputs = execute(kernel, "%%compress clf --example enc --as small\nsteps:\n"
                                     "  - {method: quantize.dynamic, backend: openvino}", timeout=300)
    assert reply["status"] == "ok", reply
    # NNCF's rich progress bars ("Statistics collection", "Applying Smooth Quant") drew themselves as widget
    # outputs in the notebook; only our report (and our own progress) may show
    shown = " ".join(str(m["content"].get("data", {}).get("text/plain", "")) + m["content"].get("text", "")
                     for m in outputs if m["msg_type"] in ("display_data", "update_display_data", "stream"))
    assert "Statistics collection" not in shown and "Smooth Quant" not in shown
    assert any(REPORT_MIME in m["content"].get("data", {}) for m in outputs if m["msg_type"] == "display_data")
