"""`semisep demo` on a tiny config: every stage runs through the commands' own functions, and the
console shows semisep's lines only (Ray's internals go to Ray's log files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

RAY_NOISE = ("Execution plan of Dataset", "Starting execution of Dataset", "RayDeprecationWarning", "(raylet)",
             "Progress bars disabled", "PreemptionWatcher", "INFO ", "core_worker")


def test_demo_console_is_semiseps_own(tmp_path):
    # relative paths, as configs/demo.yaml has them: Ray's workers run in other directories
    overrides = ["data.workdir=work", "demo.track_seconds=4", "demo.paired_train=2",
                 "demo.unpaired_per_role=2", "demo.valid=1", "demo.test=2", "demo.test_in_domain=0",
                 "model.base_channels=4", "model.critic_channels=4", "model.critic_layers=3", "train.batch_size=4",
                 "train.max_steps=4", "train.val_every=2", "train.n_critic=1", "ray.num_cpus=2",
                 "mlflow.experiment=demo-test"]
    args = [sys.executable, "-m", "semisep.cli", "demo", "--config", str(ROOT / "configs" / "demo.yaml")]
    args += [a for o in overrides for a in ("--set", o)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    for noise in RAY_NOISE:
        assert noise not in console, noise
    lines = [line for line in console.splitlines() if line.strip()]
    for own in ("[1/6] generating", "[2/6] ingesting", "[5/6] evaluating", "[6/6] registered", "BSS Eval v4",
                "| supervised |", "| oracle_irm |", "Ray dashboard: http://127.0.0.1:", "semisep separate song.wav"):
        assert any(own in line for line in lines), own
    assert any(line.startswith("candidate version 1: ") for line in lines)
    assert len(lines) <= 40, "\n".join(lines)
    assert (tmp_path / "work" / "models" / "supervised+remix" / "model.json").is_file()
    # the demo ends by naming its report, which a real browser shows with every plot and player
    last = [line for line in proc.stdout.splitlines() if line.strip()][-1]
    assert last.startswith("read, look and listen") and last.endswith("report.html"), last
    page = Path(last.rsplit(" ", 1)[1])
    assert page == tmp_path / "work" / "eval" / "report.html"
    checked = open_in_chromium(page, tmp_path / "shot.png")
    assert checked["images"] == 4 and checked["images_loaded"] == 4, checked  # SDR, SIR, SAR, ISR
    # one excerpt (2 test songs: the median is the worst), mixture + 2 references + 3 models x 2 stems
    assert checked["audio"] == 9 and checked["audio_playable"] == 9, checked
    assert all(3.5 < d < 4.5 for d in checked["durations"]), checked  # the whole 4 s song
    assert (tmp_path / "shot.png").stat().st_size > 20_000


CHECK = """<script>
window.addEventListener('load', async () => {
  const audios = [...document.querySelectorAll('audio')];
  await Promise.all(audios.map(a => a.readyState >= 1 ? null : new Promise(done => {
    a.addEventListener('loadedmetadata', done); a.addEventListener('error', done); a.load(); })));
  const out = document.createElement('pre');
  out.id = 'semisep-check';
  out.textContent = JSON.stringify({images: document.images.length,
    images_loaded: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
    audio: audios.length, audio_playable: audios.filter(a => isFinite(a.duration) && a.duration > 0).length,
    durations: audios.map(a => a.duration)});
  document.body.appendChild(out);
});
</script>"""


def open_in_chromium(page: Path, screenshot: Path) -> dict:
    """Headless Chromium (Debian's package): a screenshot of ``page``, then the page loaded again with
    a script that waits for every player's metadata and writes what loaded into the DOM it dumps."""
    import json
    import re
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed (make setup installs it)"
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio"]
    shot = subprocess.run([*base, "--window-size=1280,1400", f"--screenshot={screenshot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    probe = page.with_name("report-check.html")  # beside the page: the same file:// origin
    probe.write_text(page.read_text() + CHECK)
    dom = subprocess.run([*base, "--virtual-time-budget=30000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="semisep-check">(.*?)</pre>', dom.stdout)
    assert found, dom.stdout[-2000:] + dom.stderr[-2000:]
    return json.loads(found.group(1))
