"""%compress refuses what would break the kernel or be silently ignored: names IPython owns for --as,
options that conflict, sentences with no tokenizer; a QAT plan's training function comes from the notebook
by name (never an import). Each refusal is one line, leaves the model and IPython's own names untouched."""

from __future__ import annotations

import re

import pytest
from IPython.core.error import UsageError

import jupyter_compress as jc
from jupyter_compress.magics import _message, name_problem

# names whose objects must be the very same after a refused line (history names such as _i change every cell)
STABLE = ["get_ipython", "In", "Out", "exit", "quit", "_oh", "_dh", "_ih", "__builtins__", "__builtin__",
          "__name__", "__doc__"]
HISTORY = re.compile(r"_i*\d*|__|___")


@pytest.fixture()
def ns(shell):
    shell.run_cell(
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))\n"
        "x = torch.randn(16, 32)\nxy = (x, torch.arange(16) % 10)\n"
        "def evaluate(m):\n    return {'score': float(m(x).sum().detach())}\n"
        "sentences = ['a first sentence', 'and a second one']\n"
    ).raise_error()
    shell.run_cell("1 + 1").raise_error()  # _, _1 and the like exist
    return shell.user_ns


def _snapshot(ns):
    return {k: v for k, v in ns.items() if not HISTORY.fullmatch(k)}


def refused(shell, code, fragment):
    """Run ``code``; it must end in a one-line UsageError containing ``fragment`` and change nothing."""
    ns = shell.user_ns
    before, model_hash = _snapshot(ns), jc.state_dict_hash(ns["model"])
    result = shell.run_cell(code)
    error = result.error_in_exec
    assert isinstance(error, UsageError), f"{code!r}: {error!r}"
    text = str(error)
    assert "\n" not in text.strip(), text
    assert fragment in text, text
    after = _snapshot(ns)
    assert after.keys() == before.keys(), set(after) ^ set(before)
    assert all(after[k] is before[k] for k in after), [k for k in after if after[k] is not before[k]]
    for name in STABLE:
        assert name not in before or ns[name] is before[name]
    assert callable(ns["get_ipython"]) and ns["get_ipython"]() is shell
    assert isinstance(ns["In"], list) and isinstance(ns["Out"], dict)
    assert jc.state_dict_hash(ns["model"]) == model_hash
    return text


IPYTHON_OWNED = ["get_ipython", "In", "Out", "exit", "quit", "_", "__", "___", "_i", "_ii", "_iii", "_oh", "_dh",
                 "_ih", "_1", "_i1", "_42", "_i42", "_exit_code"]


@pytest.mark.parametrize("name", IPYTHON_OWNED)
def test_as_a_name_ipython_owns_is_refused(shell, ns, name):
    text = refused(shell, f"%compress model --prune 0.5 --as {name} --no-report", f"--as {name!r} is a name IPython owns")
    assert text == f"%compress: --as {name!r} is a name IPython owns; pick another name, e.g. --as small."


@pytest.mark.parametrize("name,why", [
    ("__builtins__", "is a name IPython owns"), ("__builtin__", "is a name IPython owns"),
    ("__name__", "is a name IPython owns"), ("__doc__", "is a name IPython owns"),
    ("__spec__", "is a name Python itself uses"), ("__loader__", "is a name Python itself uses"),
    ("_compress_report", "is a name jupyter_compress keeps its own results under (it starts with _compress)"),
    ("_compress_panel", "is a name jupyter_compress keeps its own results under (it starts with _compress)"),
    ("_compress_anything", "is a name jupyter_compress keeps its own results under (it starts with _compress)"),
    ("class", "is a Python keyword"), ("None", "is a Python keyword"),
    ("9lives", "is not a valid Python name"), ("a.b", "is not a valid Python name"),
])
def test_as_python_and_our_own_names_are_refused(shell, ns, name, why):
    refused(shell, f"%compress model --prune 0.5 --as {name} --no-report", f"--as {name!r} {why}; pick another name")


def test_names_ipython_hides_are_refused_too(shell, ns):
    assert "open" in shell.user_ns_hidden  # IPython's own open()
    refused(shell, "%compress model --prune 0.5 --as open --no-report", "--as 'open' is a name IPython owns")
    shell.push({"pushed_by_an_extension": 1}, interactive=False)  # hidden, as IPython does for its own names
    try:
        refused(shell, "%compress model --prune 0.5 --as pushed_by_an_extension --no-report", "a name IPython owns")
    finally:
        shell.drop_by_id({"pushed_by_an_extension": 1})


@pytest.mark.parametrize("line", [
    "%compress model --auto --example x --as In --no-report",
    "%compress model --tune --example x --as get_ipython",
    "%%compress model --as Out --no-report\nsteps:\n- {method: prune, amount: 0.5}\n",
])
def test_every_tool_that_binds_a_name_checks_it(shell, ns, line):
    refused(shell, line, "is a name IPython owns; pick another name")


def test_a_default_name_of_ours_is_refused(shell, ns):
    shell.run_cell("_compress_m = nn.Linear(4, 4)").raise_error()
    try:
        refused(shell, "%compress _compress_m --prune 0.5 --no-report",
                "the default name '_compress_m_compressed' is a name jupyter_compress keeps")
    finally:
        del shell.user_ns["_compress_m"]


def test_ordinary_names_still_bind(shell, ns):
    shell.run_cell("%compress model --prune 0.5 --as In_small --no-report").raise_error()
    shell.run_cell("%compress model --prune 0.5 --as _private --no-report").raise_error()
    assert isinstance(ns["In_small"], nn_module()) and isinstance(ns["_private"], nn_module())
    assert isinstance(ns["In"], list)
    assert name_problem("small") is None and name_problem("match") is None  # a soft keyword is a valid name


def nn_module():
    from torch import nn

    return nn.Module


BODY = "steps:\n- {method: prune, amount: 0.5}\n"
METHOD_OPTIONS = ["--prune 0.5", "--structured 0.5", "--svd 0.5", "--tucker 0.5", "--cp 4", "--tt 0.5", "--nm 2:4",
                  "--quantize int8", "--distill", "--distill 2", "--scope global", "--layers 0", "--exclude 2"]


@pytest.mark.parametrize("mode", ["--tune", "--compare", "--auto"])
@pytest.mark.parametrize("option", METHOD_OPTIONS)
def test_method_options_with_a_tool_that_chooses_them_are_refused(shell, ns, mode, option):
    flag = option.split()[0]
    refused(shell, f"%compress model {mode} {option} --data xy --example x", f"{mode} ")
    text = refused(shell, f"%compress model {option} {mode} --data xy --example x", f"so {flag} would be ignored")
    assert f"drop {flag}" in text


@pytest.mark.parametrize("option", METHOD_OPTIONS)
def test_method_options_on_the_line_of_a_plan_cell_are_refused(shell, ns, option):
    refused(shell, f"%%compress model {option} --as small --data xy --example x\n{BODY}",
            f"the %%compress cell body is the plan, so {option.split()[0]} on its line would be ignored")


@pytest.mark.parametrize("mode", ["--tune", "--compare", "--auto"])
def test_a_tool_in_a_plan_cell_is_refused(shell, ns, mode):
    refused(shell, f"%%compress model {mode} --data xy --example x\n{BODY}",
            f"{mode} takes no plan, and the %%compress cell body is one")


@pytest.mark.parametrize("line,fragment", [
    ("%compress model --tune --compare --data xy", "--tune and --compare are separate tools"),
    ("%compress model --compare --auto --data xy", "--compare and --auto are separate tools"),
    ("%compress model --tune --auto --example x", "--tune and --auto are separate tools"),
    ("%compress model --prune 0.5 --inplace --as small", "--as small would be ignored; drop --as, or drop --inplace"),
    ("%compress model --tune --inplace --example x", "--tune does not change MODEL, so --inplace would be ignored"),
    ("%compress model --compare --inplace --data xy", "--compare does not change MODEL"),
    ("%compress model --auto --inplace --example x", "--auto does not change MODEL"),
    ("%compress model --compare --data xy --as table", "--compare binds no model"),
    ("%compress model --tune --example x --emit-config", "Generate cell button writes the plan"),
    ("%compress model --compare --data xy --emit-config", "--compare writes no plan"),
    ("%compress model --tune --example x --seed 3", "--tune takes no --seed"),
    ("%compress model --compare --data xy --seed 3", "--compare takes no --seed"),
    ("%compress model --tune --example x --no-report", "--tune shows the panel, not a report"),
    ("%compress model --compare --data xy --no-report", "--compare shows its table, not a report"),
    ("%compress model --compare --data xy --plots", "--compare draws no before/after plots"),
    ("%compress model --auto --example x --plots", "--auto draws no before/after plots"),
    ("%compress model --prune 0.5 --plots --no-report", "the plots are part of the report"),
    ("%compress model --prune 0.5 --inplace --plots", "in place no 'before' copy is kept"),
    ("%compress model --prune 0.5 --max-drop 1%", "--max-drop goes with --auto"),
    ("%compress model --compare --data xy --max-drop 1%", "--max-drop goes with --auto"),
    ("%compress model --prune 0.5 --objective latency", "--objective goes with --auto"),
    ("%compress model --prune 0.5 --budget 50%", "--budget goes with --compare"),
    ("%compress model --auto --example x --budget 50%", "--budget goes with --compare"),
    ("%compress model --quantize static-int8 --data xy --calib x", "--calib is --data's other name"),
    ("%compress model --svd 0.5 --scope global", "--scope applies to --prune and --structured"),
])
def test_conflicting_options_are_refused(shell, ns, line, fragment):
    refused(shell, line, fragment)


def test_as_under_the_inplace_setting_is_refused(shell, ns):
    shell.run_cell("%config CompressMagics.inplace = True").raise_error()
    try:
        refused(shell, "%compress model --prune 0.5 --as small --no-report",
                "with CompressMagics.inplace = True MODEL itself is changed")
    finally:
        shell.run_cell("%config CompressMagics.inplace = False").raise_error()


def test_meaningful_combinations_still_work(shell, ns):
    # a plan cell takes --seed (it replaces the plan's seed), --inplace, --data, --emit-config
    shell.run_cell(f"%%compress model --seed 7 --as seeded --no-report\n{BODY}").raise_error()
    assert ns["_compress_report"].plan["seed"] == 7
    before = jc.state_dict_hash(ns["model"])
    shell.run_cell(f"%%compress model --inplace --no-report\n{BODY}").raise_error()
    shell.run_cell("%compress_revert model").raise_error()
    assert jc.state_dict_hash(ns["model"]) == before
    # an empty cell body: the line's options are the plan
    shell.run_cell("%%compress model --prune 0.5 --as from_line --no-report\n\n").raise_error()
    assert ns["_compress_report"].plan["steps"][0]["amount"] == 0.5
    # --scope with --prune, --as with --tune (the panel's target), --no-plots where no plots are drawn
    shell.run_cell("%compress model --prune 0.5 --scope global --as g --no-report").raise_error()
    shell.run_cell("%compress model --tune --example x --as tuned --no-plots").raise_error()
    assert ns["_compress_panel"].target.value == "tuned"


def _emitted_cell_reproduces(shell, ns, line: str, start: str, name: str) -> None:
    """Run ``line`` (with --emit-config), check the cell it wrote starts with ``start``, and that re-running
    that cell binds ``name`` to the same weights."""
    shell.run_cell(line).raise_error()
    cell, shell.rl_next_input = shell.rl_next_input, None
    assert cell.startswith(start)
    expected = jc.state_dict_hash(ns[name])
    del ns[name]
    shell.run_cell(cell).raise_error()
    assert jc.state_dict_hash(ns[name]) == expected


def test_emitted_lines_keep_the_inputs_and_drop_the_methods(shell, ns):
    # --distill without a value, and an abbreviated option, are stripped as the parser reads them
    _emitted_cell_reproduces(shell, ns, "%compress model --pru 0.5 --distill --data xy --as rec --emit-config --no-report",
                             "%%compress model --data xy --as rec --no-report\n", "rec")


def test_auto_emits_a_cell_with_its_inputs(shell, ns):
    _emitted_cell_reproduces(shell, ns,
                             "%compress model --auto --max-drop 5% --example x --as found --emit-config --no-report",
                             "%%compress model --example x --no-report --as found\n", "found")


@pytest.mark.parametrize("line,option", [
    ("%compress model --prune 0.5 --data sentences", "--data sentences"),
    ("%compress model --prune 0.5 --example sentences", "--example sentences"),
    ("%compress model --quantize static-int8 --calib sentences", "--calib sentences"),
    ("%compress model --compare --data sentences", "--data sentences"),
    ("%compress model --auto --data sentences", "--data sentences"),
    ("%compress model --tune --example sentences", "--example sentences"),
])
def test_sentences_without_a_tokenizer_name_the_option_that_fixes_it(shell, ns, line, option):
    text = refused(shell, line, f"{option} is a list of 2 strings, but Sequential has no tokenizer")
    assert "add --tokenizer TOK" in text


def test_the_cores_tokenizer_message_gets_the_magics_option():
    from torch import nn

    from jupyter_compress.core.inputs import InputsError, tokenize

    with pytest.raises(InputsError) as info:
        tokenize(nn.Linear(2, 2), ["a sentence"])
    text = _message(info.value)
    assert "--tokenizer" in text and "tokenizer=<" not in text and "\n" not in text
    assert _message(InputsError("Linear has no tokenizer.")).endswith("With %compress: add --tokenizer TOK "
                                                                      "(your tokenizer in the notebook).")


QAT = "%%compress model --data x --as q --no-report\nsteps:\n- {{method: quantize.qat, train: {}}}\n"


def test_qat_training_function_comes_from_the_notebook_by_name(shell, ns):
    shell.run_cell("calls = []\ndef my_train(m):\n    calls.append('my_train')\n"
                   "class Trainer:\n    def fit(self, m):\n        calls.append('fit')\n"
                   "trainer = Trainer()").raise_error()
    before = jc.state_dict_hash(ns["model"])
    for name, call in (("my_train", "my_train"), ("'__main__:my_train'", "my_train"), ("trainer.fit", "fit")):
        ns["calls"].clear()
        shell.run_cell(QAT.format(name)).raise_error()
        assert ns["calls"] == [call]
        assert ns["_compress_report"].plan["steps"][0]["train"] == name.strip("'")
    assert jc.state_dict_hash(ns["model"]) == before


@pytest.mark.parametrize("name,fragment", [
    ("nope", "train 'nope' is not defined in the notebook; define nope(model)"),
    ("'os:system'", "'os' is not defined in the notebook; a plan names a training function defined in the notebook (it never imports)"),
    ("'json.dumps'", "'json' is not defined in the notebook; a plan names a training function defined in the notebook (it never imports)"),
    ("x", "train 'x' is a Tensor, not a function"),
    ("model.nope", "'model' has no attribute 'nope'"),
    ("get_ipython", "is not the name of a function in the notebook"),
    ("x.__class__", "is not the name of a function in the notebook"),
    ("'my train'", "is not the name of a function in the notebook"),
])
def test_qat_training_function_that_is_missing_or_not_callable_is_one_line(shell, ns, name, fragment):
    for module in ("os", "json"):  # names a plan might give as module:function: never imported here
        ns.pop(module, None)
    text = refused(shell, QAT.format(name), fragment)
    assert text.startswith("%compress: the plan's quantize.qat train ")
