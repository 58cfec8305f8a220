"""Which shards a training run reads: validation tracks by shard, the validation size cap."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from semisep.pipeline.config import load_config
from semisep.pipeline.errors import SemisepError
from semisep.pipeline import table
from semisep.pipeline.manifest import COLUMNS, write_manifest
from semisep.pipeline.shards import write_shard
from semisep.training.data import read_validation, stream_files

FRAMES = 16


def store(tmp_path, shards: list[tuple[str, str, str, str, int]]):
    """A store of (corpus, split, role, track_id, rows) shards with random planes; returns its config."""
    cfg = load_config(None, [f"data.workdir={tmp_path}", f"data.excerpt_frames={FRAMES}", "data.excerpt_hop=16",
                             "model.depth=2", "transform.freq_bins=16", "transform.n_fft=32", "transform.hop_length=16"])
    rng = np.random.default_rng(0)
    rows = []
    for i, (corpus, split, role, track, n) in enumerate(shards):
        columns = ["mixture", "vocals", "accompaniment"] if role == "paired" else [role]
        spec = {c: (rng.standard_normal((16, FRAMES * n)) + 1j * rng.standard_normal((16, FRAMES * n))).astype(np.complex64)
                for c in columns}
        folder = os.path.join(cfg.data.shards_dir, corpus, split, role)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"part-{i:03d}.parquet")
        write_shard(path, {"track_id": track, "corpus": corpus, "split": split, "role": role}, spec,
                    list(range(0, FRAMES * n, FRAMES)), cfg.transform, FRAMES)
        rows.append(dict(COLUMNS) | {"corpus": corpus, "split": split, "role": role, "track_id": track,
                                     "path": f"/audio/{corpus}/{track}.wav", "shard": path, "excerpts": n})
    manifest = pd.DataFrame(rows)[list(COLUMNS)]
    version = table.commit(cfg.data.shards_dir, dict(zip(manifest.shard, manifest.excerpts)), [], "ingest")
    write_manifest(manifest, cfg.data.shards_dir, version)
    return cfg


def test_validation_tracks_of_two_corpora_with_one_name_stay_two_tracks(tmp_path):
    """Two adjacent validation shards with the same track_id from different corpora are two songs:
    the validation SDR is a mean over songs, and merging them would weigh them as one."""
    cfg = store(tmp_path, [("a", "train", "paired", "song", 3), ("a", "valid", "paired", "Intro", 4),
                           ("b", "valid", "paired", "Intro", 2), ("b", "valid", "paired", "Outro", 3)])
    valid = read_validation(stream_files(cfg)["valid"], cfg)
    assert len(valid.tracks) == 3
    assert valid.track.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert valid.planes["vocals"].shape == (9, 2, 16, FRAMES)


def test_a_validation_split_past_the_cap_is_refused_before_it_is_read(tmp_path):
    cfg = store(tmp_path, [("a", "train", "paired", "song", 3), ("a", "valid", "paired", "v", 40)])
    cfg.train.valid_max_mib = 0.1  # 40 rows x 3 sources x 1 KiB = 0.12 MiB
    with pytest.raises(SemisepError, match=r"validation split has 40 excerpts in 1 shards.*train.valid_max_mib=0.1"):
        read_validation(stream_files(cfg)["valid"], cfg)


def test_pseudo_remix_puts_the_teachers_stems_in_the_remix_streams(tmp_path):
    """With train.pseudo > 0, train.pseudo_remix adds the pseudo-label shards (the teacher's stems) to
    both remix streams, after the paired and unpaired ones; without it they are only the pseudo stream."""
    from semisep.pipeline.pseudo_store import COLUMNS as PSEUDO_COLUMNS, write_pseudo_manifest

    cfg = store(tmp_path, [("a", "train", "paired", "song", 3), ("a", "valid", "paired", "v", 2),
                           ("u", "train", "vocals", "solo", 4)])
    rng = np.random.default_rng(1)
    spec = {c: (rng.standard_normal((16, FRAMES * 5)) + 0j).astype(np.complex64)
            for c in ("mixture", "vocals", "accompaniment")}
    shard = str(tmp_path / "pseudo" / "pseudo-0.parquet")
    write_shard(shard, {"track_id": "mix", "corpus": "u", "split": "train", "role": "pseudo"}, spec,
                list(range(0, FRAMES * 5, FRAMES)), cfg.transform, FRAMES)
    write_pseudo_manifest(pd.DataFrame([dict(PSEUDO_COLUMNS) | {"shard": shard, "excerpts": 5, "source_excerpts": 5}]),
                          str(tmp_path / "pseudo"), "teacher", "v1")
    cfg.train.pseudo, cfg.train.pseudo_labels = 0.25, str(tmp_path / "pseudo")
    plain = stream_files(cfg)
    assert plain["pseudo"].paths == (shard,) and shard not in plain["remix_vocals"].paths + plain["remix_accompaniment"].paths
    assert plain["remix_vocals"].total == 3 + 4 and plain["remix_accompaniment"].total == 3
    cfg.train.pseudo_remix = True
    mixed = stream_files(cfg)
    assert mixed["remix_vocals"].paths[-1] == shard and mixed["remix_vocals"].total == 3 + 4 + 5
    assert mixed["remix_accompaniment"].paths[-1] == shard and mixed["remix_accompaniment"].total == 3 + 5
