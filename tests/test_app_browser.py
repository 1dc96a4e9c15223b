"""The app in a real browser (headless Chromium through Playwright): open the page, run the default comparison,
check that each mode gets a result column with its figures, run a two-step fine-tune, explore a trace.
Screenshots go to a temporary folder; `make screenshots` runs this file with SOFTVIZ_SCREENSHOTS=results/screenshots
to refresh the README's (look at them: is it clear what to do and what is shown?).

Uses Debian's Chromium (`apt install chromium`; CI installs it), because `playwright install` downloads
browsers. Set SOFTVIZ_CHROMIUM to use another executable.
"""

import os
import shutil
import struct
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

CHROMIUM = os.environ.get("SOFTVIZ_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1440, "height": 1000}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)),
                       reason=f"no Chromium at {CHROMIUM}: install Debian's chromium (apt install chromium) or set "
                              "SOFTVIZ_CHROMIUM to a Chromium executable"),
]


@pytest.fixture(scope="module")
def served():
    """(the launched demo, a headless browser, the page URL); JavaScript errors in any page fail the test."""
    import softviz.app as app

    settings = app.Settings()
    app.warm_up(settings)
    demo = app.build_demo(settings)
    _, url, _ = app.launch(demo, settings, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        yield demo, browser, url, errors
        browser.close()
    demo.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Saves a screenshot and checks it is a PNG of the page: the viewport's width, and at least its height
    (a full-page one is taller). Into SOFTVIZ_SCREENSHOTS when set (`make screenshots`), else a temporary folder."""
    folder = Path(os.environ.get("SOFTVIZ_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)

    def shoot(page, name: str, full_page: bool = False) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        head = path.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
        width, height = struct.unpack(">II", head[16:24])  # the IHDR chunk: width, height (big-endian)
        assert width == VIEWPORT["width"] and height >= VIEWPORT["height"], (path, width, height)
        return path

    return shoot


@pytest.fixture(scope="module")
def page(served):
    demo, browser, url, errors = served
    pg = browser.new_page(viewport=VIEWPORT)
    pg.on("pageerror", lambda err: errors.append(str(err)))
    pg.goto(url)
    pg.get_by_role("button", name="Compare", exact=True).wait_for(timeout=60_000)
    return pg


def visible_columns(pg):
    return pg.locator(".sv-mode-column").filter(has=pg.locator(".js-plotly-plot"))


def test_compare_shows_a_column_with_figures_for_each_mode(page, shots):
    shots(page, "start")
    page.get_by_role("button", name="Compare", exact=True).click()
    # every default mode's column holds its entropy heatmap, mixture and nearest-vocabulary figures
    page.wait_for_function("""() => [...document.querySelectorAll('.sv-mode-column')]
        .filter(c => c.querySelectorAll('.js-plotly-plot').length >= 3).length >= 3""", timeout=60_000)
    page.wait_for_timeout(1500)  # let plotly finish drawing before the screenshot
    columns = visible_columns(page)
    assert columns.count() == 3
    for i, mode in enumerate(["hard", "soft", "fuzzy"]):
        column = columns.nth(i)
        assert column.locator("h3").first.inner_text().strip() == mode
        assert column.locator(".js-plotly-plot").count() >= 3
        assert "correct" in column.inner_text() and "#0 → " in column.inner_text()
    assert page.get_by_text("Across modes").is_visible()
    assert page.locator(".js-plotly-plot").count() >= 3 * 3 + 4  # plus profiles, diversity, projection, pass@k
    full = shots(page, "compare", full_page=True)
    assert struct.unpack(">I", full.read_bytes()[20:24])[0] > 2 * VIEWPORT["height"]  # the columns and figures below
    columns.nth(0).locator("h3").first.scroll_into_view_if_needed()
    page.mouse.wheel(0, -120)
    page.wait_for_timeout(300)
    shots(page, "compare_columns")  # what a visitor sees first: the mode columns


def _selection(page) -> str:
    return page.locator("#sv-selection").inner_text()


def test_a_clicked_token_or_cell_selects_its_step_everywhere(page, shots):
    columns = visible_columns(page)
    soft = columns.nth(1)
    # a token of soft's shadow text (the 6th entry after the heading "#0 → ...:" of rollout 0)
    tokens = soft.locator(".sv-shadow .textfield > *")
    tokens.nth(6).click()
    page.wait_for_function("() => document.querySelector('#sv-selection').innerText.startsWith('Selected:')",
                           timeout=30_000)
    note = _selection(page)
    assert note.startswith("Selected: soft, rollout 0, step "), note
    step = int(note.split("step ")[1].split(" ")[0])
    # the column's soft text, mixture and nearest-vocabulary figures mark that step; its heatmap outlines the cell
    page.wait_for_function(f"""() => document.querySelectorAll('.sv-mode-column')[1].innerText
        .includes('red outline = step {step}')""", timeout=30_000)
    marked = page.evaluate("""() => [...document.querySelectorAll('.sv-mode-column')[1]
        .querySelectorAll('.js-plotly-plot')].map(p => (p.layout.shapes || []).filter(s => s.name === 'selected').length)""")
    assert marked[0] == 1 and marked[1] >= 1 and marked[2] >= 1, marked  # heatmap, mixture, nearest vocabulary
    # a cell of fuzzy's heatmap: rollout 2, step 3, clicked where plotly draws it
    heat = columns.nth(2).locator(".sv-heat .js-plotly-plot").first
    heat.scroll_into_view_if_needed()
    x, y = page.evaluate("""(el) => { const L = el._fullLayout, r = el.getBoundingClientRect();
        return [r.left + L.xaxis._offset + L.xaxis.l2p(3), r.top + L.yaxis._offset + L.yaxis.l2p(2)]; }""", heat.element_handle())
    page.mouse.click(x, y)
    page.wait_for_function("() => document.querySelector('#sv-selection').innerText.includes('fuzzy, rollout 2, step 3')",
                           timeout=30_000)
    assert "Against rollout 2 of the other modes" in _selection(page)
    # Explore opened there
    page.get_by_role("tab", name="Explore").click()
    page.get_by_text("Step 3 of rollout 2").first.wait_for(timeout=30_000)
    page.get_by_role("tab", name="Compare").click()


def test_branch_point_buttons_step_through_the_branch_points(page, shots):
    visible_columns(page).nth(0).locator(".sv-shadow .textfield > *").nth(1).click()  # hard, rollout 0, step 0
    changed = "(prev) => { const t = document.querySelector('#sv-selection').innerText; " \
              "return t.startsWith('Selected:') && t !== prev; }"
    page.wait_for_function(changed, arg=_selection(page), timeout=30_000)
    assert _selection(page).startswith("Selected: hard, rollout 0, step 0 ")
    seen = []
    for _ in range(3):
        before = _selection(page)
        page.get_by_role("button", name="Next branch point ▶").click()
        page.wait_for_function(changed, arg=before, timeout=30_000)
        note = _selection(page)
        assert "branch point" in note.split("\n")[0], note
        seen.append(note.split(":", 2)[1])
    assert len(set(seen)) == 3  # three different steps
    page.get_by_role("button", name="◀ Previous branch point").click()
    page.wait_for_function("(want) => document.querySelector('#sv-selection').innerText.split(':', 3)[1] === want",
                           arg=seen[1], timeout=30_000)
    page.wait_for_timeout(1000)
    shots(page, "compare_selection", full_page=True)


def test_explore_opens_a_mode_of_the_comparison(page, shots):
    page.get_by_role("tab", name="Explore").click()
    page.get_by_label("…or a mode of your last comparison").click()
    page.get_by_role("option", name="soft").click()
    page.get_by_text("Step 0 of rollout 0").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    assert page.locator(".js-plotly-plot:visible").count() >= 3
    shots(page, "explore", full_page=True)


def test_train_runs_live_and_compares_before_and_after(page, shots):
    page.get_by_role("tab", name="Train").click()
    steps = page.get_by_label("number input for Steps")
    steps.fill("3")
    steps.press("Enter")
    page.get_by_role("button", name="Train", exact=True).click()
    # the progress bar moves while it trains
    page.wait_for_function("""() => { const b = document.querySelector('.sv-bar [style]');
        return b && parseFloat(b.style.width) > 0 && parseFloat(b.style.width) < 100; }""", timeout=60_000, polling=50)
    page.get_by_text("Finished after 3 of 3 steps").wait_for(timeout=120_000)
    page.wait_for_timeout(1500)
    assert page.get_by_text("Before / after").is_visible()
    shots(page, "train", full_page=True)


def test_a_second_run_overlays_the_first(page, shots):
    """After the run above, a second one (another mode) draws its curves over the first's; both are kept."""
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("radio", name="soft-grpo").click()
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text("Finished after 3 of 3 steps").wait_for(timeout=120_000)
    page.get_by_text("#2 soft-grpo rloo").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    legend = page.locator(".js-plotly-plot .legendtext").all_text_contents()
    assert any(t.startswith("#1 hard rloo") for t in legend) and any(t.startswith("#2 soft-grpo rloo") for t in legend)
    shots(page, "train_overlay", full_page=True)


def test_a_question_out_of_reach_gets_a_note(page, shots):
    page.get_by_role("tab", name="Compare").click()
    page.get_by_label("Problem").fill("What is the capital of France?")
    page.get_by_role("button", name="Compare", exact=True).click()
    note = page.locator("#sv-reach")
    note.get_by_text("Out of the embedded model's reach").wait_for(timeout=60_000)
    assert "'capital', 'France'" in note.inner_text()
    page.wait_for_timeout(500)
    shots(page, "out_of_reach")


def test_export_offers_an_offline_page(page):
    page.get_by_role("tab", name="Compare").click()
    page.get_by_role("button", name="Export this comparison (HTML + JSON)").click()
    link = page.locator("a[download$='.html']").first
    link.wait_for(timeout=60_000)
    page_html = page.request.get(link.get_attribute("href")).text()  # what the link downloads
    assert page_html.count('class="plotly-graph-div"') == 4  # figures inside, plotly.js inlined
    assert link.get_attribute("download").startswith("comparison-")


def test_a_mistake_shows_as_a_message_in_the_page(page, shots):
    page.get_by_role("tab", name="Compare").click()
    page.get_by_label("Problem").fill("")
    page.get_by_role("button", name="Compare", exact=True).click()
    # a toast, and the reason where the summary was
    page.get_by_test_id("toast-text").filter(has_text="type a problem, or press 'Random problem'").wait_for(
        timeout=30_000)
    page.get_by_text("Not run: type a problem, or press 'Random problem'").wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # the message slides in
    shots(page, "error")


def test_closing_the_tab_frees_the_visitors_session(served):
    demo, browser, url, errors = served
    before = len(demo.sessions)
    tab = browser.new_page()
    tab.goto(url)
    tab.get_by_role("button", name="Compare", exact=True).wait_for(timeout=60_000)
    tab.wait_for_timeout(500)
    assert len(demo.sessions) == before + 1  # the page load bound its Session
    tab.close()
    for _ in range(100):  # Gradio notices the closed tab when its heartbeat stream ends
        if len(demo.sessions) == before:
            break
        time.sleep(0.1)
    assert len(demo.sessions) == before
