"""The web chat at `/` in a real headless Chromium (Debian's, driven by Playwright) against a
real clara-serve: enter the API key, upload a document into a new collection (progress, then
"indexed"), pick it, ask, get a streamed answer with its sources; a click shows the snippet.
`make install` puts /usr/bin/chromium there (apt-get, as root); Playwright never downloads one.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.test_server_harness import API_KEY, ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
TEXT = "The museum opened in 1902 and holds paintings and coins from the old river town."

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
if not shutil.which(CHROMIUM):
    pytest.skip(
        "no chromium (make install adds Debian's when run as root)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("webchat")
    proc = ServerProcess(
        "--model", str(tiny_llama_dir), "--index", str(tmp / "index"), "--api-key", API_KEY,
        "--max-tokens", "8", env={"CLARA_HOME": str(tmp / "home")}, log=tmp / "server.log",
    )  # fmt: skip
    yield proc.wait_ready()
    proc.stop()


@pytest.fixture(scope="module")
def page(server: ServerProcess):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def test_page_and_assets_need_no_key(server: ServerProcess) -> None:
    for path, kind in (
        ("/", "text/html"),
        ("/web/app.js", "javascript"),
        ("/web/style.css", "css"),
    ):
        r = httpx.get(server.url + path, timeout=10)
        assert r.status_code == 200 and kind in r.headers["content-type"], path
    assert httpx.get(server.url + "/v1/models", timeout=10).status_code == 401


def test_upload_ask_and_see_sources(server: ServerProcess, page, tmp_path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.fill("#api-key", API_KEY)
    page.dispatch_event("#api-key", "change")
    model = httpx.get(server.url + "/health", timeout=10).json()["model"]
    sync_api.expect(page.locator("#model")).to_have_text(model)
    default = page.locator("#mode option").first  # names what the server reads by default
    sync_api.expect(default).to_have_text("server default (memory)")

    doc = tmp_path / "museum.txt"
    doc.write_text(TEXT)
    page.fill("#new-collection", "webdocs")
    page.set_input_files("#file", str(doc))
    page.click("#upload")
    sync_api.expect(page.locator("#upload-status")).to_have_text("museum.txt: indexed into webdocs")
    assert page.locator("#upload-progress").evaluate("e => e.value") == 100
    sync_api.expect(page.locator("#collection")).to_have_value("webdocs")

    picker = page.locator("#retrieval-mode")  # offered: the server has retrieval modes
    sync_api.expect(picker.locator("option")).to_have_count(4)  # server default + 3 modes
    picker.select_option("lexical")
    page.fill("#question", TEXT)
    page.press("#question", "Enter")
    answer = page.locator(".msg.assistant.done")
    sync_api.expect(answer).to_have_count(1)
    assert answer.evaluate("e => e.firstChild.data.length") > 0  # the streamed text
    source = answer.locator("button.source").first
    sync_api.expect(source).to_contain_text("museum.txt")
    snippet = answer.locator(".snippet").first
    sync_api.expect(snippet).to_be_hidden()
    source.click()
    sync_api.expect(snippet).to_be_visible()
    sync_api.expect(snippet).to_contain_text("1902")
    assert not errors


def test_a_wrong_key_is_reported(server: ServerProcess, page) -> None:
    page.goto(server.url + "/")
    page.fill("#api-key", "wrong")
    page.dispatch_event("#api-key", "change")
    sync_api.expect(page.locator("#model")).to_contain_text("Incorrect or missing API key")


def test_markup_in_documents_and_questions_shows_as_text(server: ServerProcess, page, tmp_path):
    # a source snippet and a question holding HTML: shown as characters, never parsed as markup
    markup = '<img src=x onerror="window.injected=1"><b id="injected">bold</b>'
    doc = tmp_path / "markup.txt"
    doc.write_text(f"The lighthouse was painted red in 1931. {markup}")
    page.goto(server.url + "/")
    page.fill("#api-key", API_KEY)
    page.dispatch_event("#api-key", "change")
    page.fill("#new-collection", "markupdocs")
    page.set_input_files("#file", str(doc))
    page.click("#upload")
    sync_api.expect(page.locator("#upload-status")).to_have_text(
        "markup.txt: indexed into markupdocs"
    )
    page.fill("#question", f"When was the lighthouse painted? {markup}")
    page.press("#question", "Enter")
    answer = page.locator(".msg.assistant.done")
    sync_api.expect(answer).to_have_count(1)
    sync_api.expect(page.locator(".msg.user")).to_contain_text(markup)
    answer.locator("button.source").first.click()
    sync_api.expect(answer.locator(".snippet").first).to_contain_text(markup)
    assert page.locator("#log img, #log b, #injected").count() == 0
    assert page.evaluate("() => window.injected") is None
