"""--model and --dtype on `fleetphysics suite` and `fleetphysics run`: built-in names, local
configs, and bad input as one line with exit 2 before anything starts."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from cluster.cli import main
from experiments import model_shapes
from experiments.suite import experiment_config, model_config_dicts, with_model


def _one_line_exit_2(capsys, argv, tmp_path, *needles):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "runs").exists()  # nothing started


SUITE = ["suite", "--device", "sim:h100-sxm", "--experiments", "vram_cliff", "--profile", "smoke"]


def test_unknown_model_is_one_line_exit_2(capsys, tmp_path):
    _one_line_exit_2(capsys, SUITE + ["--model", "llama-9b", "--out", str(tmp_path / "runs")], tmp_path,
                     "'llama-9b'", "llama-3.1-8b")


def test_malformed_config_names_the_field(capsys, tmp_path):
    fields = dict(model_shapes.BUILTIN_CONFIGS["llama-3.1-8b"])
    del fields["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(fields))
    _one_line_exit_2(capsys, SUITE + ["--model", str(tmp_path / "config.json"), "--out", str(tmp_path / "runs")],
                     tmp_path, "'hidden_size' is missing", "config.json")
    (tmp_path / "config.json").write_text("{")
    _one_line_exit_2(capsys, SUITE + ["--model", str(tmp_path), "--out", str(tmp_path / "runs")], tmp_path,
                     "not a readable JSON config")


def test_bad_dtype_is_one_line_exit_2(capsys, tmp_path):
    _one_line_exit_2(capsys, SUITE + ["--model", "gpt2", "--dtype", "int8", "--out", str(tmp_path / "runs")],
                     tmp_path, "--dtype", "int8")
    _one_line_exit_2(capsys, ["run", "--model", "nope", "--simulate-profiles", "h100-sxm",
                              "--out", str(tmp_path / "runs")], tmp_path, "'nope'")


@pytest.mark.slow  # an 8B-class cliff search or a whole simulated run: tens of seconds
def test_local_config_runs_the_suite_with_its_own_figures(capsys, tmp_path):
    # A Llama 3.1 8B variant with 4 key-value heads: half the KV cache of the built-in.
    fields = {**model_shapes.BUILTIN_CONFIGS["llama-3.1-8b"], "num_key_value_heads": 4}
    (tmp_path / "config.json").write_text(json.dumps(fields))
    argv = SUITE + ["--model", str(tmp_path), "--dtype", "bfloat16", "--out", str(tmp_path / "out"), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    cliff = summary["experiments"]["vram_cliff"]
    model = cliff["model"]
    assert model["kv_cache_bytes_per_token"] == 65536 and model["dtype"] == "bfloat16"
    assert model["name"] == str(tmp_path / "config.json") and model["builtin"] is False
    assert model["weight_bytes"] == 2 * (8_030_261_248 - 32 * 2 * 4096 * 4 * 128)
    assert cliff["limiting_cause"] == "memory" and cliff["cliff_mib"] <= cliff["vram_total_mib"]
    assert abs(cliff["max_context"] - cliff["predicted_max_context"]) <= 256
    meta = json.loads(next((tmp_path / "out").rglob("run_metadata.json")).read_text())
    assert meta["config"]["configs"]["vram_cliff"]["model"] == str(tmp_path)


def test_with_model_sets_only_the_model_experiments():
    configs = {n: experiment_config(n, "smoke") for n in ("baseline", "vram_cliff", "joule_curve")}
    out = with_model(configs, "qwen2.5-7b", "bfloat16")
    assert out["baseline"] is configs["baseline"]
    assert (out["vram_cliff"].model, out["vram_cliff"].dtype) == ("qwen2.5-7b", "bfloat16")
    assert (out["joule_curve"].model, out["joule_curve"].dtype) == ("qwen2.5-7b", "bfloat16")
    assert out["vram_cliff"].batch_sizes == configs["vram_cliff"].batch_sizes  # the preset otherwise kept
    assert with_model(configs, None, None) is configs
    with pytest.raises(ValueError):
        with_model(configs, None, "int8")


def test_run_passes_the_model_to_every_host_as_config_dicts():
    from cluster.job import build_parser, options_from_args

    args = build_parser().parse_args(["--model", "mistral-7b", "--dtype", "bfloat16", "--profile", "smoke"])
    opts = options_from_args(args)
    assert (opts.model, opts.dtype) == ("mistral-7b", "bfloat16")
    dicts = model_config_dicts({}, ("baseline", "vram_cliff", "joule_curve"), "smoke", opts.model, opts.dtype)
    assert set(dicts) == {"vram_cliff", "joule_curve"}
    for name, d in dicts.items():
        # what a HostAgent does with them
        cfg = type(experiment_config(name, "smoke")).model_validate(d)
        assert (cfg.model, cfg.dtype) == ("mistral-7b", "bfloat16")
    kept = model_config_dicts({"vram_cliff": {**dicts["vram_cliff"], "context_step": 64}}, ("vram_cliff",), "smoke",
                              "gpt2", None)
    assert kept["vram_cliff"]["context_step"] == 64 and kept["vram_cliff"]["model"] == "gpt2"
