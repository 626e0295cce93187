"""The report as a person sees it: rendered by headless Chromium (Debian package `chromium`).

Slow (starts a browser): `pytest -m slow tests/report/test_chromium.py`.
"""

import shutil
import subprocess

import pytest

from lowcarb.report import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

# Injected into a copy of the report only: the browser writes what it decoded into the DOM.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => i.id + ':' + i.naturalWidth + 'x' + i.naturalHeight);
  const rows = document.querySelectorAll('#model-table tbody tr').length;
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = 'IMAGES ' + imgs.join(' ') + ' ROWS ' + rows;
  document.body.appendChild(probe);
});
</script></body>"""


def chromium(tmp_path, *args):
    profile = tmp_path / "profile"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")
def test_report_renders_with_images_and_table(tmp_path, two_model_run):
    html = render_html(two_model_run)
    page = tmp_path / "report.html"
    page.write_text(html)
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE))

    dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()).stdout
    assert 'id="probe"' in dom, dom[-2000:]
    probe = dom[dom.index('id="probe"'):]
    for img_id in ("co2-per-stage-plot", "tradeoff-plot"):
        size = probe.split(f"{img_id}:", 1)[1].split()[0]
        width, height = (int(v) for v in size.split("x"))
        assert width > 300 and height > 200, (img_id, size)  # decoded, not a broken image
    assert "ROWS 2" in probe

    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri())
    from PIL import Image

    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2400)
    lo, hi = image.getextrema()
    assert hi - lo > 100  # not a blank page
    # Plenty of non-white pixels: text, tables and figures were drawn.
    dark = sum(image.histogram()[:200])
    assert dark > 20000
