"""Training batches: exact STFT-domain mixing, remix and paired shares, reproducible draws."""

import numpy as np
import torch

from semisep.pipeline.config import TransformConfig, load_config
from semisep.pipeline.spectrogram import features, planes_log_magnitude, stft
from semisep.training.batches import Batches, Pool

F, T = 256, 32


def _const(value: float, rows: int) -> torch.Tensor:
    """Planes whose real part is ``value`` everywhere: |.| = value, so features tell rows apart."""
    planes = torch.zeros(rows, 2, F, T)
    planes[:, 0] = value
    return planes.half()


def _cfg(**train):
    train = {"remix": 0.0} | train
    overrides = ["data.excerpt_frames=32"] + [f"train.{k}={v}" for k, v in train.items()]
    return load_config(None, overrides)


def _streams(paired_rows=6, unpaired_rows=6):
    return {"paired": {"mixture": _const(3.0, paired_rows), "vocals": _const(1.0, paired_rows),
                       "accompaniment": _const(2.0, paired_rows)},
            "mixture": {"mixture": _const(30.0, unpaired_rows)}, "vocals": {"vocals": _const(10.0, unpaired_rows)},
            "accompaniment": {"accompaniment": _const(20.0, unpaired_rows)}}


def _values(log_mag: torch.Tensor) -> list[float]:
    """One magnitude per row (rows are constant)."""
    return [round(float(v), 3) for v in torch.expm1(log_mag[:, 0, 0])]


def test_excerpts_of_different_songs_mix_exactly_in_the_stft_domain():
    """A remixed excerpt is the STFT of the summed waveforms (frames aligned), not a sum of magnitudes."""
    cfg = TransformConfig()
    rng = np.random.default_rng(0)
    voice, band = (torch.from_numpy(rng.standard_normal(8192 * 3).astype(np.float32)) for _ in range(2))
    start_v, start_b, hop = 20, 45, cfg.hop_length
    planes = {}
    for name, audio, start in (("vocals", voice, start_v), ("accompaniment", band, start_b)):
        spec = stft(audio, cfg)[: cfg.freq_bins, start:start + T]
        planes[name] = torch.stack([spec.real, spec.imag])[None].half()
    pools = {"paired": Pool({"mixture": planes["vocals"], **planes}, seed=0),
             "remix_vocals": Pool({"vocals": planes["vocals"]}, seed=1),
             "remix_accompaniment": Pool({"accompaniment": planes["accompaniment"]}, seed=2)}
    batch = Batches(pools, batch_size=1, seed=0, gain_db=(-3.0, -3.0), remix=0.99).supervised()
    # the same two excerpts as one waveform: each song shifted so its excerpt starts at frame 40
    shift = lambda x, start: torch.roll(x, (40 - start) * hop)  # noqa: E731
    g = 10 ** (-3 / 20)
    mixed = features(g * (shift(voice, start_v) + shift(band, start_b)), cfg)[:, 40:40 + T]
    assert torch.allclose(batch["mixture"][0], mixed, atol=2e-2)  # float16 storage
    sum_of_magnitudes = torch.log1p(torch.expm1(batch["vocals"][0]) + torch.expm1(batch["accompaniment"][0]))
    assert (batch["mixture"][0] - sum_of_magnitudes).abs().mean() > 0.1


def test_remix_share_draws_from_all_vocals_and_accompaniment():
    cfg = _cfg(remix=0.5, **{"gain_db": "[0,0]"})
    batches = Batches.from_arrays(_streams(), cfg, batch_size=8, seed=0)
    seen_v, seen_a = set(), set()
    for _ in range(20):
        b = batches.supervised()
        v, a, m = _values(b["vocals"]), _values(b["accompaniment"]), _values(b["mixture"])
        assert v[:4] == [1.0] * 4 and a[:4] == [2.0] * 4  # the paired half
        assert all(abs(mi - (vi + ai)) < 1e-2 for mi, vi, ai in zip(m, v, a))  # in-phase planes add
        seen_v |= set(v[4:])
        seen_a |= set(a[4:])
    assert seen_v == {1.0, 10.0} and seen_a == {2.0, 20.0}  # paired stems across songs, and unpaired ones


def _rows(values) -> torch.Tensor:
    """Planes whose row k has magnitude ``values[k]`` everywhere: every excerpt its own value."""
    planes = torch.zeros(len(values), 2, F, T)
    planes[:, 0] = torch.tensor(values, dtype=torch.float32)[:, None, None]
    return planes.half()


def test_remixed_vocals_and_accompaniment_come_from_independent_excerpts():
    """Every excerpt distinct: paired song k has vocals k and accompaniment 100 + k, unpaired vocals
    are 10 + k, unpaired accompaniment 200 + k. A remixed row pairs any vocals with any
    accompaniment; one that took both from the same excerpt would keep the songs' own pairs."""
    streams = {"paired": {"mixture": _rows([101.0 + 2 * k for k in range(1, 7)]), "vocals": _rows(list(range(1, 7))),
                          "accompaniment": _rows([100.0 + k for k in range(1, 7)])},
               "vocals": {"vocals": _rows([10.0 + k for k in range(1, 7)])},
               "accompaniment": {"accompaniment": _rows([200.0 + k for k in range(1, 7)])}}
    cfg = _cfg(remix=0.5, **{"gain_db": "[0,0]"})
    batches = Batches.from_arrays(streams, cfg, batch_size=8, seed=0)
    pairs, partners = set(), {}
    for _ in range(30):
        b = batches.supervised()
        v, a = _values(b["vocals"]), _values(b["accompaniment"])
        assert all(ai == vi + 100 for vi, ai in zip(v[:4], a[:4]))  # paired rows keep their own stems
        for vi, ai in zip(v[4:], a[4:]):
            pairs.add((vi, ai))
            partners.setdefault(vi, set()).add(ai)
    assert {vi for vi, _ in pairs} == set(range(1, 7)) | set(range(11, 17))  # paired and unpaired vocals
    assert {ai for _, ai in pairs} == set(range(101, 107)) | set(range(201, 207))
    assert len(pairs) > 60 and min(len(p) for p in partners.values()) >= 3, sorted(pairs)[:20]
    assert sum(ai == vi + 100 for vi, ai in pairs) < 6  # a song's own pair only by chance


def test_gains_are_random_per_source_within_the_range():
    cfg = _cfg(**{"gain_db": "[-6,6]"})
    b = Batches.from_arrays(_streams(), cfg, batch_size=6, seed=0).supervised()
    ratios = np.array(_values(b["vocals"])) / np.array(_values(b["accompaniment"])) * 2.0
    assert np.all((ratios > 10 ** (-12 / 20) - 1e-3) & (ratios < 10 ** (12 / 20) + 1e-3))
    assert len(set(np.round(ratios, 3))) == 6  # every row its own gains


def test_adversarial_paired_share_draws_critic_examples_from_paired_songs():
    cfg = _cfg(adversarial_paired=0.5, **{"gain_db": "[0,0]"})
    b = Batches.from_arrays(_streams(), cfg, batch_size=4, seed=0).unsupervised()
    assert _values(b["mixture"]) == [30.0, 30.0, 3.0, 3.0]
    assert _values(b["vocals"]) == [10.0, 10.0, 1.0, 1.0]
    assert _values(b["accompaniment"]) == [20.0, 20.0, 2.0, 2.0]


def test_draws_are_reproducible_and_resume_where_the_state_says():
    rng = torch.Generator().manual_seed(0)
    streams = {"paired": {k: (torch.rand(10, 2, F, T, generator=rng) - 0.5).half() for k in ("mixture", "vocals", "accompaniment")}}
    for name in ("mixture", "vocals", "accompaniment"):
        streams[name] = {name: (torch.rand(7, 2, F, T, generator=rng) - 0.5).half()}
    cfg = _cfg(remix=0.25)
    straight = Batches.from_arrays(streams, cfg, 4, seed=3)
    first = [straight.supervised() for _ in range(5)] + [straight.unsupervised() for _ in range(3)]
    again = Batches.from_arrays(streams, cfg, 4, seed=3)
    for want in first[:5]:
        got = again.supervised()
        assert all(torch.equal(got[k], want[k]) for k in want)
    resumed = Batches.from_arrays(streams, cfg, 4, seed=3, state=again.state())
    for want in first[5:]:
        got = resumed.unsupervised()
        assert all(torch.equal(got[k], want[k]) for k in want)
    other_seed = Batches.from_arrays(streams, cfg, 4, seed=4).supervised()
    assert not torch.equal(other_seed["mixture"], first[0]["mixture"])


def test_planes_give_the_models_features():
    x = torch.randn(8192)
    spec = stft(x, TransformConfig())[:256]
    planes = torch.stack([spec.real, spec.imag])
    assert torch.allclose(planes_log_magnitude(planes), features(x, TransformConfig()), atol=1e-5)


def test_pseudo_labelled_rows_fill_their_share_and_are_remixed_with_gains():
    """train.pseudo of each supervised batch comes from the pseudo-label pool (the teacher's stems,
    here 50 + k and 150 + k), after the paired rows and the remixed ones; gains re-level them."""
    streams = {"paired": {"mixture": _rows([3.0] * 6), "vocals": _rows([1.0] * 6), "accompaniment": _rows([2.0] * 6)},
               "pseudo": {"mixture": _rows([200.0 + 2 * k for k in range(5)]), "vocals": _rows([50.0 + k for k in range(5)]),
                          "accompaniment": _rows([150.0 + k for k in range(5)])}}
    cfg = _cfg(remix=0.0, pseudo=0.5, **{"gain_db": "[0,0]"})
    b = Batches.from_arrays(streams, cfg, batch_size=8, seed=0)
    batch = b.supervised()
    v, a, m = _values(batch["vocals"]), _values(batch["accompaniment"]), _values(batch["mixture"])
    assert v[:4] == [1.0] * 4 and sorted(v[4:]) == sorted(set(v[4:])) and set(v[4:]) <= {50.0, 51.0, 52.0, 53.0, 54.0}
    assert all(ai == vi + 100 for vi, ai in zip(v[4:], a[4:]))  # a pseudo-label keeps the teacher's pair
    assert all(abs(mi - (vi + ai)) < 0.5 for mi, vi, ai in zip(m, v, a))
    gained = Batches.from_arrays(streams, _cfg(pseudo=0.5, **{"gain_db": "[-6,6]"}), batch_size=8, seed=0).supervised()
    ratios = np.array(_values(gained["accompaniment"])[4:]) / np.array(_values(gained["vocals"])[4:])
    assert len(set(np.round(ratios, 3))) == 4  # each pseudo row re-levelled on its own


def test_pseudo_remix_pairs_the_teachers_stems_across_songs_in_the_remixed_rows():
    """train.pseudo_remix: the remix pools also hold the teacher's stems (50 + k, 150 + k), so remixed
    rows pair them with paired stems (1, 2) and with other songs' pseudo stems; without it the
    remixed rows hold paired stems only."""
    streams = {"paired": {"mixture": _rows([3.0] * 6), "vocals": _rows([1.0] * 6), "accompaniment": _rows([2.0] * 6)},
               "pseudo": {"mixture": _rows([200.0 + 2 * k for k in range(5)]), "vocals": _rows([50.0 + k for k in range(5)]),
                          "accompaniment": _rows([150.0 + k for k in range(5)])}}

    def remixed(pseudo_remix: bool) -> list[tuple[float, float]]:
        cfg = _cfg(remix=0.5, pseudo=0.25, pseudo_remix=pseudo_remix, **{"gain_db": "[0,0]"})
        b = Batches.from_arrays(streams, cfg, batch_size=8, seed=0)
        pairs = []
        for _ in range(6):
            batch = b.supervised()
            pairs += list(zip(_values(batch["vocals"])[2:6], _values(batch["accompaniment"])[2:6]))
        return pairs

    assert set(remixed(False)) <= {(1.0, 2.0)}
    pairs = remixed(True)
    assert {v for v, _ in pairs} == {1.0, 50.0, 51.0, 52.0, 53.0, 54.0}  # every row of both pools, epoch by epoch
    assert {a for _, a in pairs} == {2.0, 150.0, 151.0, 152.0, 153.0, 154.0}
    assert any(v == 1.0 and a >= 150 for v, a in pairs) and any(v >= 50 and a >= 150 and a != v + 100 for v, a in pairs)


def test_without_unpaired_solo_recordings_the_critics_real_examples_are_paired_stems():
    streams = {"paired": {"mixture": _const(3.0, 6), "vocals": _const(1.0, 6), "accompaniment": _const(2.0, 6)},
               "mixture": {"mixture": _const(30.0, 6)}}
    b = Batches.from_arrays(streams, _cfg(**{"gain_db": "[0,0]"}), batch_size=4, seed=0).unsupervised()
    assert _values(b["mixture"]) == [30.0] * 4  # the unpaired mixtures
    assert _values(b["vocals"]) == [1.0] * 4 and _values(b["accompaniment"]) == [2.0] * 4
