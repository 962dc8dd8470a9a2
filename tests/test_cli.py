"""The command line as other tools use it: exit codes, the JSON contract, clear one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from owner import compute_invariants, load_invariants, save_invariants
from owner.errors import InvariantsFileError

TinyModel = Callable[..., Path]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pawprint", *args], capture_output=True, text=True, timeout=300)


def test_compare_json_contract(tiny_model: TinyModel) -> None:
    a, b = tiny_model("gpt2"), tiny_model("gpt2", seed=1)
    r = run("compare", str(a), str(a), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ics"] == pytest.approx(1.0, abs=1e-6)
    assert out["common_probe_tokens"] > 16
    assert {(t["layer_a"], t["layer_b"], t["term"]) for t in out["terms"]} == {
        (la, la, term) for la in (1, 2) for term in ("attn_qk", "attn_vo", "ffn")
    }
    r = run("compare", str(a), str(b), "--json")
    assert r.returncode == 0, r.stderr
    assert abs(json.loads(r.stdout)["ics"]) < 0.2


def test_compare_gives_a_calibrated_verdict_and_a_sheet(tiny_model: TinyModel, tmp_path: Path) -> None:
    """``compare --json`` adds verdict, p_value and z against the shipped null; ``--sheet`` draws both dogs."""
    a, b = tiny_model("llama"), tiny_model("llama", seed=1)
    sheet = tmp_path / "sheet.png"
    r = run("compare", str(a), str(a), "--json", "--sheet", str(sheet))
    assert r.returncode == 0, r.stderr
    same = json.loads(r.stdout)
    assert same["verdict"] == "derived" and same["p_value"] < 1e-6 and same["z"] > 5
    assert same["null_id"].startswith("null/3:") and set(same["term_z"]) == {"attn_qk", "attn_vo", "ffn"}
    from PIL import Image

    with Image.open(sheet) as im:
        assert im.width >= 2 * 256 and im.height >= 256
    r = run("compare", str(a), str(b), "--json", "--layers", "all")
    assert r.returncode == 0, r.stderr
    other = json.loads(r.stdout)
    assert other["verdict"] != "derived" and other["p_value"] > 1e-3
    assert len(other["layer_z"]) == len(other["terms"]) == 3 * 3  # three layers matched one to one
    r = run("compare", str(a), str(b), "--null", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot read the null model" in r.stderr


def test_render_vector_bundle_and_errors(tiny_model: TinyModel, tmp_path: Path) -> None:
    import numpy as np

    v = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    np.save(tmp_path / "v.npy", v)
    for name in ("dog.png", "dog.svg"):
        r = run("render", str(tmp_path / "v.npy"), "-o", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "dog.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "dog.svg").read_text().lstrip().startswith("<svg")
    inv = tmp_path / "a.inv"
    assert run("owner", "invariants", str(tiny_model("llama")), "-o", str(inv), "-q").returncode == 0
    r = run("render", str(inv), "-o", str(tmp_path / "inv.png"))
    assert r.returncode == 0 and "encoded by" in r.stdout, r.stderr
    np.save(tmp_path / "short.npy", v[:10])
    r = run("render", str(tmp_path / "short.npy"), "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "expected 512 finite floats" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_invariants_file_then_compare(tiny_model: TinyModel, tmp_path: Path) -> None:
    a = tiny_model("llama")
    f = tmp_path / "a.inv"
    r = run("owner", "invariants", str(a), "-o", str(f), "--layers", "all", "-q")
    assert r.returncode == 0, r.stderr
    inv = load_invariants(f)
    assert inv.layers == (0, 1, 2)
    r = run("compare", str(f), str(a), "--json", "--layers", "all")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ics"] == pytest.approx(1.0, abs=1e-6) and len(out["terms"]) == 9


def test_huref_method_selectable(tiny_model: TinyModel) -> None:
    a = tiny_model("llama")
    r = run("compare", str(a), str(a), "--json", "--method", "huref-2024")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["method"] == "huref-2024"


def test_inspect_json(tiny_model: TinyModel) -> None:
    r = run("owner", "inspect", str(tiny_model("phi3")), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["architecture"]["family"] == "phi3"
    assert out["architecture"]["n_kv_heads"] == 2
    names = [t["name"] for t in out["tensors_to_read"]]
    assert "model.layers.2.self_attn.qkv_proj.weight" in names
    assert not any(".layers.0." in n for n in names)  # only the last two layers are read
    assert out["bytes_to_read"] < out["bytes_total"]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no-config", "config.json is missing"),
        ("bad-family", "is not supported"),
        ("no-weights", "no weights found"),
        ("bad-layers", "out of range"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(
    tiny_model: TinyModel, tmp_path: Path, breakage: str, message: str
) -> None:
    d = tmp_path / "m"
    shutil.copytree(tiny_model("llama"), d)
    args = ["owner", "invariants", str(d), "-o", str(tmp_path / "x.inv"), "-q"]
    if breakage == "no-config":
        (d / "config.json").unlink()
    elif breakage == "bad-family":
        cfg = json.loads((d / "config.json").read_text())
        cfg["model_type"] = "rwkv"
        (d / "config.json").write_text(json.dumps(cfg))
    elif breakage == "no-weights":
        (d / "model.safetensors").unlink()
    elif breakage == "bad-layers":
        args += ["--layers", "7"]
    r = run(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert message in r.stderr and r.stderr.startswith("pawprint: error:")
    assert not (tmp_path / "x.inv").exists()


def test_invariants_file_round_trip_and_tamper(tiny_model: TinyModel, tmp_path: Path) -> None:
    inv = compute_invariants(tiny_model("bloom"))
    f = tmp_path / "b.inv"
    save_invariants(inv, f)
    back = load_invariants(f)
    assert back.probes == inv.probes and back.present == inv.present and back.layers == inv.layers
    for k, v in inv.terms.items():
        np.testing.assert_array_equal(v, back.terms[k])
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(f), framework="numpy") as h:
        meta = json.loads(h.metadata()["pawprint"])
    meta["tokens"][0] = meta["tokens"][0] + "x"  # a token swapped behind the recorded probe-set id
    save_file(load_file(str(f)), str(f), metadata={"pawprint": json.dumps(meta)})
    with pytest.raises(InvariantsFileError, match="probe set id"):
        load_invariants(f)
    f.write_bytes(b"garbage")
    with pytest.raises(InvariantsFileError, match=r"b\.inv"):
        load_invariants(f)
