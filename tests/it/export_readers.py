"""Reads what `klio-edge export` wrote with the readers researchers use, and checks it against
the outputs it came from (tests/it/export.rs runs it in the venv scripts/test.sh makes).

    python export_readers.py --out OUT --parquet DIR --webdataset DIR --jsonl DIR \
        [--readme README.md --snippets-in DIR]

- pyarrow: one row per done item in element order; every feature and model column equals the
  item's `.npy` bit for bit, in the file's own nesting ([dim][frames], or
  [channel][dim][frames]); `<name>_shape` is the `.npy`'s shape; segments equal `<model>.json`'s;
  `meta` is the item's meta.json.
- Hugging Face datasets: `load_dataset("parquet", ...)` gives the same rows and values.
- webdataset: iterating the shards gives one sample per item, in element order, whose `.npy`
  entries decode to the item's arrays and whose `json` is its meta.json.
- JSONL: one line per item with NeMo's keys; the paths it names exist and hold the shapes it
  states.
- With --readme: the three snippets under `## Use the outputs` run as written (in
  --snippets-in, where the README's commands wrote `ds/`), and what they compute is checked.

Prints one JSON line of counts; any mismatch is an AssertionError (exit 1).
"""

import argparse
import glob
import json
import os
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def item_dirs(out):
    return sorted(
        d
        for d in os.listdir(out)
        if os.path.isdir(os.path.join(out, d)) and not d.startswith(".")
    )


def load_items(out):
    """element -> (meta, {file name: np.ndarray or parsed json})"""
    items = {}
    for e in item_dirs(out):
        d = os.path.join(out, e)
        if not os.path.exists(os.path.join(d, "meta.json")):
            continue
        with open(os.path.join(d, "meta.json"), "rb") as f:
            meta_bytes = f.read()
        files = {}
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if name.endswith(".npy"):
                files[name] = np.load(p)
            elif name.endswith(".json") and name != "meta.json":
                with open(p) as f:
                    files[name] = json.load(f)
        items[e] = (json.loads(meta_bytes), meta_bytes, files)
    return items


def same_bits(a, b, what):
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: values differ"


def flat_values(scalar):
    """The float32 values under a (nested) list scalar, in order, as numpy, plus the nesting
    depth."""
    arr = scalar.values
    depth = 1
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = arr.flatten()
        depth += 1
    assert arr.type == pa.float32(), f"values are {arr.type}, not float32"
    return arr.to_numpy(zero_copy_only=False), depth


def check_parquet(out, items, d):
    files = sorted(glob.glob(os.path.join(d, "part-*.parquet")))
    assert files, f"no part-*.parquet in {d}"
    for f in files:
        md = pq.ParquetFile(f).metadata
        assert md.num_row_groups >= 1
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                comp = md.row_group(g).column(c).compression
                assert comp == "ZSTD", f"{f}: column {c} is {comp}"
    table = pq.read_table(d)
    elements = table.column("element").to_pylist()
    assert elements == sorted(items), f"rows {elements} vs done items {sorted(items)}"
    for i, e in enumerate(elements):
        meta, meta_bytes, files_ = items[e]
        row = {name: table.column(name)[i] for name in table.column_names}
        assert row["meta"].as_py() == meta_bytes.decode(), f"{e}: meta"
        assert row["source"].as_py() == meta["source"]
        assert row["config_hash"].as_py() == meta["config_hash"]
        assert row["input_hash"].as_py() == meta["input_hash"]
        assert row["duration_s"].as_py() == meta["duration_s"], f"{e}: duration_s"
        assert row["sample_rate_hz"].as_py() == meta["sample_rate_hz"]
        assert row["frames"].as_py() == meta.get("frames")
        for name, feat in meta["features"].items():
            want = files_[feat["file"]]
            got, depth = flat_values(row[name])
            assert depth == want.ndim, f"{e}.{name}: {depth} list levels for a {want.ndim}-D array"
            same_bits(got.reshape(want.shape), want, f"parquet {e}.{name}")
            assert row[f"{name}_shape"].as_py() == list(want.shape), f"{e}.{name}_shape"
            # The nesting itself, as a Python reader sees it.
            nested = np.asarray(row[name].as_py(), dtype=np.float32)
            same_bits(nested, want, f"parquet {e}.{name} (nested)")
        for m in meta.get("models") or []:
            body = files_.get(m["file"])
            if m.get("segments") is not None:
                segs = row[f"{m['name']}_segments"].as_py()
                assert segs == [
                    {"start": s["start"], "end": s["end"]} for s in body["segments"]
                ], f"{e}: segments"
                if m.get("values"):
                    got, _ = flat_values(row[f"{m['name']}_probs"])
                    same_bits(got, files_[m["values"]].ravel(), f"{e}: probs")
    return table, len(files)


def check_datasets(items, d, table):
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=sorted(glob.glob(os.path.join(d, "*.parquet"))),
                      split="train")
    assert ds.num_rows == len(items), f"datasets: {ds.num_rows} rows"
    for col in ("element", "duration_s"):
        assert col in ds.column_names, f"datasets: no {col} column"
    assert ds["element"] == sorted(items)
    for i, e in enumerate(ds["element"]):
        meta, _, files_ = items[e]
        for name, feat in meta["features"].items():
            same_bits(np.asarray(ds[i][name], dtype=np.float32), files_[feat["file"]],
                      f"datasets {e}.{name}")
    return ds.num_rows


def check_webdataset(items, d):
    import webdataset as wds

    shards = sorted(glob.glob(os.path.join(d, "shard-*.tar")))
    assert shards, f"no shard-*.tar in {d}"
    seen = []
    for sample in wds.WebDataset(shards, shardshuffle=False).decode():
        meta = sample["json"]
        e = meta["element"]
        seen.append(e)
        assert sample["__key__"] == e.replace(".", "_"), f"key {sample['__key__']} for {e}"
        _, _, files_ = items[e]
        for name, arr in files_.items():
            key = name  # `<key>.<file name>`: the sample's key is the file's own name
            assert key in sample, f"{e}: {key} missing from the sample ({sorted(sample)})"
            if name.endswith(".npy"):
                same_bits(sample[key], arr, f"webdataset {e}.{name}")
            else:
                assert sample[key] == arr, f"webdataset {e}.{name}"
    assert seen == sorted(items), f"webdataset samples {seen} vs {sorted(items)}"
    return len(seen), len(shards)


def check_jsonl(out, items, d):
    path = os.path.join(d, "manifest.jsonl")
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    assert [l["element"] for l in lines] == sorted(items)
    for l in lines:
        meta, _, files_ = items[l["element"]]
        for key in ("audio_filepath", "duration"):
            assert key in l, f"{key} missing: {l}"
        assert os.path.isfile(l["audio_filepath"]), l["audio_filepath"]
        assert l["duration"] == meta["duration_s"]
        assert os.path.samefile(l["out"], out)
        for name, feat in l["features"].items():
            arr = np.load(os.path.join(l["out"], feat["path"]), mmap_mode="r")
            assert list(arr.shape) == feat["shape"], f"{name}: {arr.shape} vs {feat['shape']}"
        for m in meta.get("models") or []:
            if m.get("segments") is not None:
                want = [{"start": s["start"], "end": s["end"]}
                        for s in files_[m["file"]]["segments"]]
                assert l["segments"] == want
                assert l["models"][m["name"]]["segments"] == want
    return len(lines)


def readme_snippets(readme):
    text = open(readme).read()
    start = text.index("\n## Use the outputs")
    end = text.find("\n## ", start + 1)
    section = text[start: end if end > 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def check_snippets(readme, where, items):
    snippets = readme_snippets(readme)
    assert len(snippets) == 3, f"{len(snippets)} python snippets under ## Use the outputs"
    cwd = os.getcwd()
    os.chdir(where)
    try:
        spaces = []
        for s in snippets:
            ns = {}
            exec(compile(s, "README.md", "exec"), ns)
            spaces.append(ns)
    finally:
        os.chdir(cwd)
    first = sorted(items)[0]
    meta, _, files_ = items[first]
    want = files_[meta["features"]["log_mel"]["file"]]
    # Each snippet leaves the first item's log-mel in `log_mel`, in librosa's orientation.
    for i, ns in enumerate(spaces):
        assert "log_mel" in ns, f"snippet {i + 1} defines no log_mel"
        same_bits(ns["log_mel"], want, f"README snippet {i + 1}")
    return len(spaces)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--parquet")
    ap.add_argument("--webdataset")
    ap.add_argument("--jsonl")
    ap.add_argument("--readme")
    ap.add_argument("--snippets-in")
    a = ap.parse_args()
    items = load_items(a.out)
    assert items, f"no done items in {a.out}"
    counts = {"items": len(items)}
    if a.parquet:
        table, files = check_parquet(a.out, items, a.parquet)
        counts["parquet_rows"] = table.num_rows
        counts["parquet_files"] = files
        counts["parquet_columns"] = table.column_names
        counts["datasets_rows"] = check_datasets(items, a.parquet, table)
    if a.webdataset:
        counts["webdataset_samples"], counts["webdataset_shards"] = check_webdataset(
            items, a.webdataset)
    if a.jsonl:
        counts["jsonl_lines"] = check_jsonl(a.out, items, a.jsonl)
    if a.readme:
        counts["snippets"] = check_snippets(a.readme, a.snippets_in, items)
    print(json.dumps(counts))


if __name__ == "__main__":
    sys.exit(main())
