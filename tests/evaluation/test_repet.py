"""REPET-SIM's mask for the pseudo-labeller: computed on the whole song from its excerpts."""

import numpy as np

from semisep.evaluation.repet import excerpt_masks, repet_mask
from semisep.pipeline.shards import excerpt_starts


def test_excerpt_masks_are_the_whole_songs_mask_at_each_excerpts_frames():
    """Excerpts overlap (hop 16 of 32 frames) and the last one is shifted to the song's end; placed
    back at their start frames they give the song, whose REPET-SIM mask each excerpt then takes a
    slice of: an excerpt's mask depends on the whole song (frames 2 s away), not on the excerpt."""
    rng = np.random.default_rng(0)
    bins, total, frames = 24, 203, 32
    loop = rng.random((bins, 20)) + 0.1  # a repeating accompaniment with a non-repeating voice on top
    voice = rng.random((bins, total)) > 0.9
    song = np.tile(loop, (1, 11))[:, :total] + voice * 3.0
    phase = rng.uniform(0, 2 * np.pi, (bins, total))
    planes = np.stack([song * np.cos(phase), song * np.sin(phase)]).astype(np.float32)  # (2, F, frames)
    starts = excerpt_starts(total, frames, 16)
    assert starts[-1] == total - frames and (total - frames) % 16
    excerpts = np.stack([planes[:, :, s:s + frames] for s in starts])
    masks = excerpt_masks(excerpts, starts, sr=8192, hop_length=256)
    whole = repet_mask(np.abs(song).astype(np.float32), 8192, 256)
    assert masks.shape == (len(starts), 1, bins, frames)
    for k, s in enumerate(starts):
        assert np.allclose(masks[k, 0], whole[:, s:s + frames], atol=1e-5)
    # the excerpt alone would give another mask: the song's repetitions are what REPET-SIM uses
    alone = repet_mask(np.abs(song[:, :frames]).astype(np.float32), 8192, 256)
    assert not np.allclose(alone, masks[0, 0], atol=1e-2)
    assert whole[voice].mean() > 5 * whole[~voice].mean()  # the non-repeating part is the voice
